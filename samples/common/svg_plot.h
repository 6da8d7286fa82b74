/* A loss-curve plot written directly as SVG (no plotting dependency): training loss as a line,
 * validation loss as dots, axes with a few labelled ticks. */
#ifndef KILN_SVG_PLOT_H
#define KILN_SVG_PLOT_H

#include <stddef.h>

typedef struct plot_series {
  const double *x, *y;
  size_t n;
} plot_series;

/* Returns 0 on success; prints why to stderr otherwise. */
int svg_plot_losses(const char* path, const char* title, plot_series train, plot_series val);

#endif
