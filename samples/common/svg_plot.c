/* See svg_plot.h. */
#include "svg_plot.h"

#include <math.h>
#include <stdio.h>

enum { W = 800, H = 480, LEFT = 70, RIGHT = 20, TOP = 40, BOTTOM = 50 };

static void range(plot_series a, plot_series b, const double* (*pick)(plot_series), double* lo,
                  double* hi) {
  *lo = INFINITY, *hi = -INFINITY;
  plot_series s[2] = {a, b};
  for (int k = 0; k < 2; ++k) {
    const double* v = pick(s[k]);
    for (size_t i = 0; i < s[k].n; ++i) {
      if (!isfinite(v[i])) continue;
      if (v[i] < *lo) *lo = v[i];
      if (v[i] > *hi) *hi = v[i];
    }
  }
  if (!(*lo <= *hi)) *lo = 0, *hi = 1;
  if (*hi - *lo < 1e-9) *hi = *lo + 1;
}

static const double* pick_x(plot_series s) { return s.x; }
static const double* pick_y(plot_series s) { return s.y; }

int svg_plot_losses(const char* path, const char* title, plot_series train, plot_series val) {
  FILE* f = fopen(path, "w");
  if (!f) {
    fprintf(stderr, "kiln-train: cannot write the plot '%s'\n", path);
    return 1;
  }
  double x0, x1, y0, y1;
  range(train, val, pick_x, &x0, &x1);
  range(train, val, pick_y, &y0, &y1);
  const double pw = W - LEFT - RIGHT, ph = H - TOP - BOTTOM;
#define PX(v) (LEFT + ((v)-x0) / (x1 - x0) * pw)
#define PY(v) (TOP + (1.0 - ((v)-y0) / (y1 - y0)) * ph)
  fprintf(f,
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
          "font-family=\"sans-serif\" font-size=\"12\">\n"
          "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
          "<text x=\"%d\" y=\"24\" font-size=\"16\">%s</text>\n",
          W, H, LEFT, title);
  fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%g\" height=\"%g\" fill=\"none\" stroke=\"#444\"/>\n",
          LEFT, TOP, pw, ph);
  for (int i = 0; i <= 4; ++i) {
    double yv = y0 + (y1 - y0) * i / 4.0, xv = x0 + (x1 - x0) * i / 4.0;
    fprintf(f,
            "<line x1=\"%d\" x2=\"%g\" y1=\"%g\" y2=\"%g\" stroke=\"#ddd\"/>"
            "<text x=\"%d\" y=\"%g\" text-anchor=\"end\">%.3f</text>\n",
            LEFT, LEFT + pw, PY(yv), PY(yv), LEFT - 6, PY(yv) + 4, yv);
    fprintf(f, "<text x=\"%g\" y=\"%d\" text-anchor=\"middle\">%.0f</text>\n", PX(xv),
            H - BOTTOM + 18, xv);
  }
  fprintf(f, "<text x=\"%g\" y=\"%d\" text-anchor=\"middle\">step</text>\n", LEFT + pw / 2, H - 10);
  if (train.n > 0) {
    fprintf(f, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
    for (size_t i = 0; i < train.n; ++i) {
      if (isfinite(train.y[i])) fprintf(f, "%.1f,%.1f ", PX(train.x[i]), PY(train.y[i]));
    }
    fprintf(f, "\"/>\n");
  }
  for (size_t i = 0; i < val.n; ++i) {
    if (isfinite(val.y[i])) {
      fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.5\" fill=\"#d62728\"/>\n", PX(val.x[i]),
              PY(val.y[i]));
    }
  }
  fprintf(f,
          "<line x1=\"%g\" x2=\"%g\" y1=\"%d\" y2=\"%d\" stroke=\"#1f77b4\" stroke-width=\"2\"/>"
          "<text x=\"%g\" y=\"%d\">train loss</text>\n"
          "<circle cx=\"%g\" cy=\"%d\" r=\"3.5\" fill=\"#d62728\"/>"
          "<text x=\"%g\" y=\"%d\">validation loss</text>\n</svg>\n",
          LEFT + pw - 230, LEFT + pw - 210, TOP + 14, TOP + 14, LEFT + pw - 205, TOP + 18,
          LEFT + pw - 110, TOP + 14, LEFT + pw - 100, TOP + 18);
#undef PX
#undef PY
  int failed = ferror(f);
  if (fclose(f) != 0 || failed) {
    fprintf(stderr, "kiln-train: cannot write the plot '%s'\n", path);
    return 1;
  }
  return 0;
}
