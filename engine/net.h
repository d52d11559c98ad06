/*
 * net.h: the eng_net handle of engine.h (private to engine/): a model with a trainer used
 * only for its eval forward pass and activation arena.
 */
#pragma once

#include <stdbool.h>

#include "dataset.h"
#include "engine.h"
#include "model.h"
#include "train.h"

struct eng_net {
    eng_model *model;  /* owned */
    eng_dataset empty; /* no data: the trainer needs a dataset to point at */
    eng_trainer tr;
    bool tr_ready;
    char arch[32];
    bool torchvision_head;
};
