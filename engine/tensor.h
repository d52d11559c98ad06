/*
 * tensor.h: a shape plus a float pointer, NCHW. A view: it never owns its memory.
 */
#pragma once

#include <stddef.h>

#define ENG_TENSOR_MAX_DIMS 4

typedef struct eng_tensor {
    float *data; /* borrowed */
    size_t ndim;
    size_t shape[ENG_TENSOR_MAX_DIMS];
} eng_tensor;

/* Number of elements (1 for ndim 0). */
size_t eng_tensor_numel(const eng_tensor *t);
/* Fills a view of `data` with the given shape (ndim <= ENG_TENSOR_MAX_DIMS). */
eng_tensor eng_tensor_view(float *data, size_t ndim, const size_t *shape);
