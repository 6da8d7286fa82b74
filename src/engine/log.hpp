// Logging: a sink per runtime, falling back to the process-wide sink that kiln_set_log_callback()
// sets. The process-wide sink is the one piece of global mutable state kiln.h documents.
#pragma once

#include <string>

#include "kiln.h"

namespace kiln {

struct LogSink {
  kiln_log_fn fn = nullptr;  // null → the process-wide sink
  void* user_data = nullptr;
  kiln_log_level min_level = KILN_LOG_WARN;
};

void set_global_log_sink(const LogSink& sink);

class Logger {
 public:
  Logger() = default;
  explicit Logger(LogSink sink) : sink_(sink) {}
  void log(kiln_log_level level, const std::string& message) const;
  void debug(const std::string& m) const { log(KILN_LOG_DEBUG, m); }
  void info(const std::string& m) const { log(KILN_LOG_INFO, m); }
  void warn(const std::string& m) const { log(KILN_LOG_WARN, m); }

 private:
  LogSink sink_;
};

}  // namespace kiln
