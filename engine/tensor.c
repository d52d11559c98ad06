/*
 * tensor.c: tensor views.
 */
#include "tensor.h"

#include "util.h"

size_t eng_tensor_numel(const eng_tensor *t)
{
    size_t n = 1;
    for (size_t i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

eng_tensor eng_tensor_view(float *data, size_t ndim, const size_t *shape)
{
    eng_tensor t = {.data = data, .ndim = ndim};
    ENG_ASSERT(ndim <= ENG_TENSOR_MAX_DIMS);
    for (size_t i = 0; i < ndim; i++)
        t.shape[i] = shape[i];
    return t;
}
