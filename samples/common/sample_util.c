#define _POSIX_C_SOURCE 200809L
#include "sample_util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int sample_check(kiln_status status, const char* what) {
  if (status == KILN_OK) return 0;
  fprintf(stderr, "%s failed: %s: %s\n", what, kiln_status_name(status), kiln_last_error());
  return 1;
}

int sample_progress_bar(float fraction, const char* stage, void* user_data) {
  (void)user_data;
  if (!isatty(fileno(stderr))) return 0;
  const int width = 30;
  int filled = (int)(fraction * (float)width + 0.5f);
  if (filled > width) filled = width;
  fprintf(stderr, "\rloading [");
  for (int i = 0; i < width; ++i) fputc(i < filled ? '#' : '.', stderr);
  fprintf(stderr, "] %3d%% %-10s", (int)(fraction * 100.0f + 0.5f), stage);
  if (fraction >= 1.0f) fputc('\n', stderr);
  fflush(stderr);
  return 0;
}

int sample_parse_backend(const char* name, kiln_backend* out) {
  if (strcmp(name, "auto") == 0)
    *out = KILN_BACKEND_AUTO;
  else if (strcmp(name, "cpu") == 0)
    *out = KILN_BACKEND_CPU;
  else if (strcmp(name, "cuda") == 0)
    *out = KILN_BACKEND_CUDA;
  else
    return 1;
  return 0;
}

int sample_parse_precision(const char* name, kiln_precision* out) {
  if (strcmp(name, "default") == 0)
    *out = KILN_PRECISION_DEFAULT;
  else if (strcmp(name, "bf16") == 0)
    *out = KILN_PRECISION_BF16;
  else if (strcmp(name, "f32") == 0)
    *out = KILN_PRECISION_F32;
  else
    return 1;
  return 0;
}

int sample_parse_long(const char* text, long min, long max, long* out) {
  char* end = NULL;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min || v > max) return 1;
  *out = v;
  return 0;
}

int sample_parse_float(const char* text, float* out) {
  char* end = NULL;
  errno = 0;
  float v = strtof(text, &end);
  if (errno != 0 || end == text || *end != '\0') return 1;
  *out = v;
  return 0;
}

int sample_parse_ids(const char* text, int32_t** ids, size_t* n_ids) {
  size_t cap = 16, n = 0;
  int32_t* buf = malloc(cap * sizeof *buf);
  if (!buf) return 1;
  const char* p = text;
  while (*p) {
    char* end = NULL;
    errno = 0;
    long v = strtol(p, &end, 10);
    if (errno != 0 || end == p || v < INT32_MIN || v > INT32_MAX) {
      free(buf);
      return 1;
    }
    if (n == cap) {
      cap *= 2;
      int32_t* grown = realloc(buf, cap * sizeof *buf);
      if (!grown) {
        free(buf);
        return 1;
      }
      buf = grown;
    }
    buf[n++] = (int32_t)v;
    p = end;
    if (*p == ',')
      ++p;
    else if (*p != '\0') {
      free(buf);
      return 1;
    }
  }
  *ids = buf;
  *n_ids = n;
  return 0;
}
