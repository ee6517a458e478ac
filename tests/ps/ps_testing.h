// Helpers shared by the parameter-server tests that run servers (ps_test.cc, ps_fault_test.cc).
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "ps/client.h"

namespace qgrad::ps {

// `call` must throw RpcError with `code`, naming the server and containing `needle`.
inline void expect_rpc_error(const std::function<void()>& call, grpc::StatusCode code,
                             const std::string& needle) {
  try {
    call();
    ADD_FAILURE() << "expected " << status_code_name(code) << ", the call succeeded";
  } catch (const RpcError& e) {
    EXPECT_EQ(e.code, code) << e.what();
    EXPECT_THAT(e.what(), testing::HasSubstr(needle));
    EXPECT_THAT(e.what(), testing::HasSubstr("127.0.0.1:"));  // names the server
  }
}

}  // namespace qgrad::ps
