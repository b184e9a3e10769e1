// Argument checks shared by the CPU and CUDA kernels: messages name the argument and what was expected
// (built by EMB_OPT_CHECK, without iostreams: see common/check_message.h).
#pragma once
#include "common/check_message.h"
#include <torch/library.h>
#include <ATen/ATen.h>

#define EMB_OPT_CHECK_INDEX_DTYPE(t, name)                                                            \
  EMB_OPT_CHECK((t).scalar_type() == at::kLong || (t).scalar_type() == at::kInt, name,                 \
              " must be int32 or int64, got ", (t).scalar_type())

#define EMB_OPT_CHECK_DTYPE(t, dtype, name) \
  EMB_OPT_CHECK((t).scalar_type() == (dtype), name, " must be ", (dtype), ", got ", (t).scalar_type())

#define EMB_OPT_CHECK_1D(t, name) EMB_OPT_CHECK((t).dim() == 1, name, " must be 1-D, got shape ", (t).sizes())
