/* Small helpers shared by the C samples. Uses only kiln.h and the C standard library. */
#ifndef KILN_SAMPLE_UTIL_H
#define KILN_SAMPLE_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

/* Prints "name: STATUS: message" to stderr and returns 1 when status is not KILN_OK. */
int sample_check(kiln_status status, const char* what);

/* A load-progress callback that draws a progress bar on stderr (only when stderr is a TTY, so
 * logs stay clean). user_data is unused. */
int sample_progress_bar(float fraction, const char* stage, void* user_data);

/* Parses a backend name: "auto", "cpu" or "cuda". Returns 0 on success. */
int sample_parse_backend(const char* name, kiln_backend* out);

/* Parses "default", "bf16" or "f32" (--precision); returns 0 on success. */
int sample_parse_precision(const char* name, kiln_precision* out);

/* Parses "1,2,3" into a malloc'd array; returns 0 on success (caller frees *ids). */
int sample_parse_ids(const char* text, int32_t** ids, size_t* n_ids);

/* Parses an integer / float argument with range checking; returns 0 on success. */
int sample_parse_long(const char* text, long min, long max, long* out);
int sample_parse_float(const char* text, float* out);

#endif
