#include "engine/log.hpp"

#include <algorithm>
#include <cstdio>
#include <mutex>

namespace kiln {

namespace {
// Process-wide sink (documented in kiln.h as settable by kiln_set_log_callback).
std::mutex g_sink_mutex;
LogSink g_sink;

const char* level_name(kiln_log_level level) {
  switch (level) {
    case KILN_LOG_DEBUG: return "debug";
    case KILN_LOG_INFO: return "info";
    case KILN_LOG_WARN: return "warn";
    case KILN_LOG_ERROR: return "error";
    default: return "log";
  }
}

void deliver(const LogSink& sink, kiln_log_level level, const std::string& message) {
  if (level < sink.min_level || level >= KILN_LOG_NONE) return;
  if (sink.fn) {
    sink.fn(level, message.c_str(), sink.user_data);
  } else {
    std::fprintf(stderr, "kiln %s: %s\n", level_name(level), message.c_str());
  }
}
}  // namespace

void set_global_log_sink(const LogSink& sink) {
  std::lock_guard<std::mutex> lock(g_sink_mutex);
  g_sink = sink;
}

void Logger::log(kiln_log_level level, const std::string& message) const {
  if (sink_.fn) {
    deliver(sink_, level, message);
    return;
  }
  LogSink global;
  {
    std::lock_guard<std::mutex> lock(g_sink_mutex);
    global = g_sink;
  }
  // A runtime without its own sink still honours its own level threshold.
  global.min_level = std::max(global.min_level, sink_.min_level);
  deliver(global, level, message);
}

}  // namespace kiln
