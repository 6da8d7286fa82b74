/* A minimal JSON reader and writer for the JSON Lines the samples exchange: one object per line
 * whose members are numbers, strings or arrays of integers, e.g. {"id": 3, "text": "..."} or
 * {"id": 3, "ids": [1, 2]}. Strings are fully unescaped (RFC 8259 section 7, including \uXXXX
 * surrogate pairs → one UTF-8 sequence); anything else (nested objects, true/false/null) is
 * rejected with a message rather than guessed at.
 *
 * Header-only (static functions) because samples/CMakeLists.txt compiles each sample with
 * common/sample_util.c only. Uses only the C standard library. */
#ifndef KILN_JSON_LINE_H
#define KILN_JSON_LINE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct json_line {
  int has_id, has_text, has_ids;
  long long id;
  char* text; /* UTF-8, may contain NUL bytes; text_len is its length */
  size_t text_len;
  int32_t* ids;
  size_t n_ids;
} json_line;

typedef struct json_cursor {
  const char *begin, *p, *end;
  char* err;
  size_t err_cap;
} json_cursor;

/* A growable byte or int buffer. */
typedef struct json_buf {
  char* data;
  size_t len, cap;
} json_buf;

static int json_buf_push(json_buf* b, const void* bytes, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 64;
    while (cap < b->len + n + 1) cap *= 2;
    char* grown = (char*)realloc(b->data, cap);
    if (!grown) return 1;
    b->data = grown;
    b->cap = cap;
  }
  memcpy(b->data + b->len, bytes, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

static int json_fail(json_cursor* c, const char* what) {
  snprintf(c->err, c->err_cap, "%s at byte %ld", what, (long)(c->p - c->begin) + 1);
  return 1;
}

static void json_skip_ws(json_cursor* c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) ++c->p;
}

static int json_hex4(json_cursor* c, unsigned* out) {
  unsigned v = 0;
  int i;
  if (c->end - c->p < 4) return json_fail(c, "truncated \\u escape");
  for (i = 0; i < 4; ++i) {
    char ch = c->p[i];
    v <<= 4;
    if (ch >= '0' && ch <= '9')
      v |= (unsigned)(ch - '0');
    else if (ch >= 'a' && ch <= 'f')
      v |= (unsigned)(ch - 'a' + 10);
    else if (ch >= 'A' && ch <= 'F')
      v |= (unsigned)(ch - 'A' + 10);
    else
      return json_fail(c, "bad hex digit in \\u escape");
  }
  c->p += 4;
  *out = v;
  return 0;
}

static int json_put_utf8(json_buf* b, unsigned cp) {
  unsigned char u[4];
  size_t n;
  if (cp < 0x80) {
    u[0] = (unsigned char)cp;
    n = 1;
  } else if (cp < 0x800) {
    u[0] = (unsigned char)(0xC0 | (cp >> 6));
    u[1] = (unsigned char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    u[0] = (unsigned char)(0xE0 | (cp >> 12));
    u[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (unsigned char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    u[0] = (unsigned char)(0xF0 | (cp >> 18));
    u[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (unsigned char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  return json_buf_push(b, u, n);
}

/* Parses a string starting at '"' into out (raw UTF-8 bytes pass through unchanged). */
static int json_parse_string(json_cursor* c, json_buf* out) {
  if (c->p >= c->end || *c->p != '"') return json_fail(c, "expected a string");
  ++c->p;
  for (;;) {
    const char* run = c->p;
    while (c->p < c->end && *c->p != '"' && *c->p != '\\' && (unsigned char)*c->p >= 0x20) ++c->p;
    if (c->p > run && json_buf_push(out, run, (size_t)(c->p - run)))
      return json_fail(c, "out of memory");
    if (c->p >= c->end) return json_fail(c, "unterminated string");
    if (*c->p == '"') {
      ++c->p;
      break;
    }
    if ((unsigned char)*c->p < 0x20) return json_fail(c, "unescaped control character in string");
    ++c->p; /* backslash */
    if (c->p >= c->end) return json_fail(c, "unterminated escape");
    {
      char e = *c->p++;
      char ch;
      unsigned cp, lo;
      switch (e) {
        case '"':
          ch = '"';
          break;
        case '\\':
          ch = '\\';
          break;
        case '/':
          ch = '/';
          break;
        case 'b':
          ch = '\b';
          break;
        case 'f':
          ch = '\f';
          break;
        case 'n':
          ch = '\n';
          break;
        case 'r':
          ch = '\r';
          break;
        case 't':
          ch = '\t';
          break;
        case 'u':
          if (json_hex4(c, &cp)) return 1;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return json_fail(c, "lone low surrogate in \\u escape");
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            /* RFC 8259 section 7: a character outside the BMP is a UTF-16 surrogate pair. */
            if (c->end - c->p < 2 || c->p[0] != '\\' || c->p[1] != 'u')
              return json_fail(c, "high surrogate not followed by a \\u low surrogate");
            c->p += 2;
            if (json_hex4(c, &lo)) return 1;
            if (lo < 0xDC00 || lo > 0xDFFF)
              return json_fail(c, "high surrogate followed by a non-low surrogate");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          }
          if (json_put_utf8(out, cp)) return json_fail(c, "out of memory");
          continue;
        default:
          return json_fail(c, "unknown escape in string");
      }
      if (json_buf_push(out, &ch, 1)) return json_fail(c, "out of memory");
    }
  }
  return 0;
}

/* An integer (no fraction or exponent) within long long. */
static int json_parse_int(json_cursor* c, long long* out) {
  long long v = 0;
  int neg = 0, digits = 0;
  if (c->p < c->end && *c->p == '-') {
    neg = 1;
    ++c->p;
  }
  while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
    int d = *c->p++ - '0';
    if (v > (9223372036854775807LL - d) / 10) return json_fail(c, "integer out of range");
    v = v * 10 + d;
    ++digits;
  }
  if (!digits) return json_fail(c, "expected an integer");
  if (c->p < c->end && (*c->p == '.' || *c->p == 'e' || *c->p == 'E'))
    return json_fail(c, "expected an integer, got a fraction");
  *out = neg ? -v : v;
  return 0;
}

static int json_parse_int_array(json_cursor* c, json_line* line) {
  json_buf b = {NULL, 0, 0};
  ++c->p; /* '[' */
  json_skip_ws(c);
  if (c->p < c->end && *c->p == ']') {
    ++c->p;
    goto done;
  }
  for (;;) {
    long long v;
    int32_t id;
    json_skip_ws(c);
    if (json_parse_int(c, &v)) {
      free(b.data);
      return 1;
    }
    if (v < INT32_MIN || v > INT32_MAX) {
      free(b.data);
      return json_fail(c, "id does not fit in int32");
    }
    id = (int32_t)v;
    if (json_buf_push(&b, &id, sizeof id)) {
      free(b.data);
      return json_fail(c, "out of memory");
    }
    json_skip_ws(c);
    if (c->p < c->end && *c->p == ',') {
      ++c->p;
      continue;
    }
    if (c->p < c->end && *c->p == ']') {
      ++c->p;
      break;
    }
    free(b.data);
    return json_fail(c, "expected ',' or ']' in array");
  }
done:
  free(line->ids);
  line->ids = (int32_t*)b.data;
  line->n_ids = b.len / sizeof(int32_t);
  line->has_ids = 1;
  return 0;
}

static void json_line_free(json_line* line) {
  free(line->text);
  free(line->ids);
  memset(line, 0, sizeof *line);
}

/* Parses one line into *line (freeing what it held). Returns 0, or 1 with a message in err. */
static int json_line_parse(const char* text, size_t len, json_line* line, char* err,
                           size_t err_cap) {
  json_cursor c;
  c.begin = c.p = text;
  c.end = text + len;
  c.err = err;
  c.err_cap = err_cap;
  json_line_free(line);
  json_skip_ws(&c);
  if (c.p >= c.end || *c.p != '{') return json_fail(&c, "expected '{'");
  ++c.p;
  json_skip_ws(&c);
  if (c.p < c.end && *c.p == '}') {
    ++c.p;
    goto tail;
  }
  for (;;) {
    json_buf key = {NULL, 0, 0};
    json_skip_ws(&c);
    if (json_parse_string(&c, &key)) {
      free(key.data);
      return 1;
    }
    json_skip_ws(&c);
    if (c.p >= c.end || *c.p != ':') {
      free(key.data);
      return json_fail(&c, "expected ':' after a key");
    }
    ++c.p;
    json_skip_ws(&c);
    if (c.p >= c.end) {
      free(key.data);
      return json_fail(&c, "missing value");
    }
    if (*c.p == '"') {
      json_buf value = {NULL, 0, 0};
      if (json_parse_string(&c, &value)) {
        free(key.data);
        free(value.data);
        return 1;
      }
      if (key.data && strcmp(key.data, "text") == 0 && key.len == 4) {
        free(line->text);
        line->text = value.data ? value.data : (char*)calloc(1, 1);
        line->text_len = value.len;
        line->has_text = 1;
      } else {
        free(value.data);
      }
    } else if (*c.p == '[') {
      if (json_parse_int_array(&c, line)) {
        free(key.data);
        return 1;
      }
    } else if (*c.p == '-' || (*c.p >= '0' && *c.p <= '9')) {
      long long v;
      if (json_parse_int(&c, &v)) {
        free(key.data);
        return 1;
      }
      if (key.data && strcmp(key.data, "id") == 0 && key.len == 2) {
        line->id = v;
        line->has_id = 1;
      }
    } else {
      free(key.data);
      return json_fail(&c,
                       "unsupported value (expected a string, an integer or an array of integers)");
    }
    free(key.data);
    json_skip_ws(&c);
    if (c.p < c.end && *c.p == ',') {
      ++c.p;
      continue;
    }
    if (c.p < c.end && *c.p == '}') {
      ++c.p;
      break;
    }
    return json_fail(&c, "expected ',' or '}' in object");
  }
tail:
  json_skip_ws(&c);
  if (c.p != c.end) return json_fail(&c, "trailing characters after the object");
  return 0;
}

/* Writes bytes as a JSON string literal: '"', '\\' and control characters escaped, UTF-8 as is. */
static void json_write_string(FILE* out, const char* s, size_t n) {
  size_t i;
  fputc('"', out);
  for (i = 0; i < n; ++i) {
    unsigned char ch = (unsigned char)s[i];
    switch (ch) {
      case '"':
        fputs("\\\"", out);
        break;
      case '\\':
        fputs("\\\\", out);
        break;
      case '\n':
        fputs("\\n", out);
        break;
      case '\r':
        fputs("\\r", out);
        break;
      case '\t':
        fputs("\\t", out);
        break;
      default:
        if (ch < 0x20 || ch == 0x7F)
          fprintf(out, "\\u%04x", ch);
        else
          fputc(ch, out);
    }
  }
  fputc('"', out);
}

#endif
