// kiln::Error — the one exception type the engine throws. The C shim (capi/) catches it at the
// ABI boundary and turns it into a kiln_status plus the thread-local message.
#pragma once

#include <stdexcept>
#include <string>

#include "kiln.h"

namespace kiln {

class Error : public std::runtime_error {
 public:
  Error(kiln_status status, const std::string& message)
      : std::runtime_error(message), status_(status) {}
  kiln_status status() const noexcept { return status_; }

 private:
  kiln_status status_;
};

// Throws kiln::Error. Messages say what failed, where (file, tensor, argument) and expected vs got.
[[noreturn]] inline void fail(kiln_status status, const std::string& message) {
  throw Error(status, message);
}

}  // namespace kiln
