# qgrad_warnings: linked PRIVATE into our own targets only, so generated code and third-party
# headers are left alone.
add_library(qgrad_warnings INTERFACE)
target_compile_options(qgrad_warnings INTERFACE
  -Wall -Wextra -Werror -Wundef -Wno-psabi
  # Stochastic rounding decisions must not change with the compiler's FMA contraction: the
  # scalar, SIMD and CUDA paths give the same bytes only if a*b+c is rounded the same way.
  -ffp-contract=off)

if(QGRAD_SANITIZE)
  string(REPLACE ";" "," _qgrad_san "${QGRAD_SANITIZE}")
  # GCC 12's -Wmaybe-uninitialized misfires inside libstdc++ (std::regex, std::function) when
  # sanitizer instrumentation changes what it can prove; the Release build keeps the warning.
  target_compile_options(qgrad_warnings INTERFACE -fsanitize=${_qgrad_san} -fno-omit-frame-pointer
                         -fno-sanitize-recover=all -Wno-maybe-uninitialized)
  target_link_options(qgrad_warnings INTERFACE -fsanitize=${_qgrad_san})
endif()
