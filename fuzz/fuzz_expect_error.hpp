// The contract every fuzz target checks: a parser fed hostile bytes either succeeds or throws
// kiln::Error. Anything else — another exception type, a crash, a sanitizer report, a hang — is a
// finding, so only kiln::Error is caught here; libFuzzer reports the rest.
#pragma once

#include "core/error.hpp"

namespace kiln::fuzz {

template <typename Body>
void expect_success_or_kiln_error(Body&& body) {
  try {
    body();
  } catch (const kiln::Error&) {
    // Rejected bad input: the expected outcome.
  }
}

}  // namespace kiln::fuzz
