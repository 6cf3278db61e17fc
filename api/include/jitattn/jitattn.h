#pragma once
#include "jitattn/attention.h"
#include "jitattn/bias.h"
#include "jitattn/error.h"
#include "jitattn/merge.h"
#include "jitattn/swiglu.h"
#include "jitattn/tensor.h"
#include "jitattn/variant.h"
