#pragma once
#include "jitattn/attention.h"
#include "jitattn/bias.h"
#include "jitattn/error.h"
#include "jitattn/merge.h"
#include "jitattn/registry.h"
#include "jitattn/tensor.h"
