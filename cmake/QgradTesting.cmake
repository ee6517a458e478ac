# qgrad_add_test(name SOURCES ... LIBS ... [LABELS ...] [TIMEOUT s])
# One executable per test file; every case shows up in CTest and every test has a timeout, so a
# hang counts as a failure.
include(GoogleTest)
function(qgrad_add_test name)
  cmake_parse_arguments(T "" "TIMEOUT;RESOURCE_LOCK" "SOURCES;LIBS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set(_lock "")
  if(T_RESOURCE_LOCK)
    set(_lock RESOURCE_LOCK ${T_RESOURCE_LOCK})
  endif()
  if(NOT T_LABELS)
    set(T_LABELS unit)
  endif()
  add_executable(${name} ${T_SOURCES})
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock GTest::gtest_main
                        qgrad_warnings)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  gtest_discover_tests(${name} PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT} ${_lock}
                       DISCOVERY_TIMEOUT 60)
endfunction()

# qgrad_add_mpi_test(name SOURCES ... LIBS ... NP 2 3 4 [TIMEOUT s])
# One executable (with tests/support/mpi_gtest_main.cc) run by CTest under mpiexec once per
# process count, labelled `mpi`. --oversubscribe makes Open MPI yield while it waits
# (docs/environment.md); the ENVIRONMENT lets it run as root.
function(qgrad_add_mpi_test name)
  cmake_parse_arguments(T "" "TIMEOUT" "SOURCES;LIBS;NP" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_executable(${name} ${T_SOURCES} ${PROJECT_SOURCE_DIR}/tests/support/mpi_gtest_main.cc)
  target_link_libraries(${name} PRIVATE ${T_LIBS} GTest::gtest GTest::gmock qgrad_warnings)
  set_target_properties(${name} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  set(_env "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1")
  if(QGRAD_SANITIZE)
    # Open MPI's own allocations and the buffers of abandoned operations are never freed.
    list(APPEND _env "ASAN_OPTIONS=detect_leaks=0")
  endif()
  foreach(np IN LISTS T_NP)
    add_test(NAME ${name}_np${np}
             COMMAND ${MPIEXEC_EXECUTABLE} --allow-run-as-root --oversubscribe
                     ${MPIEXEC_NUMPROC_FLAG} ${np} ${MPIEXEC_PREFLAGS} $<TARGET_FILE:${name}>
                     ${MPIEXEC_POSTFLAGS})
    set_tests_properties(${name}_np${np} PROPERTIES LABELS mpi TIMEOUT ${T_TIMEOUT}
                         PROCESSORS 2 ENVIRONMENT "${_env}")
  endforeach()
endfunction()
