// Argument checks shared by every op family: devices, dtypes and shapes, and the VALUE checks of index arguments
// -- written once for every device: on the CPU a loop over the data, elsewhere ATen reductions with one read-back
// (checks_by_loop says which). An index outside what it indexes raises IndexError (EMB_OPT_CHECK_INDEX), anything
// else RuntimeError. Messages name the op, the argument, the first bad position and what was expected (built by
// EMB_OPT_CHECK, without iostreams: see common/check_message.h). The reduction paths are tested on CPU tensors
// (EMB_OPT_CHECKS_BY_REDUCTION=1); on CUDA they were compiled by scripts/check_cuda_compile.sh, not run, in the
// session that wrote them.
#pragma once
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>

#include "common/check_message.h"

#define EMB_OPT_CHECK_INDEX_DTYPE(t, name)                                                            \
  EMB_OPT_CHECK((t).scalar_type() == at::kLong || (t).scalar_type() == at::kInt, name,                 \
              " must be int32 or int64, got ", (t).scalar_type())

#define EMB_OPT_CHECK_DTYPE(t, dtype, name) \
  EMB_OPT_CHECK((t).scalar_type() == (dtype), name, " must be ", (dtype), ", got ", (t).scalar_type())

#define EMB_OPT_CHECK_1D(t, name) EMB_OPT_CHECK((t).dim() == 1, name, " must be 1-D, got shape ", (t).sizes())

namespace emb_opt {

// Every tensor sits on `device` (a null or undefined one, an absent optional argument, passes): a tensor of
// another device would hand a kernel a pointer it cannot read.
inline void check_same_device(const char* op, const at::Device& device,
                              std::initializer_list<std::pair<const char*, const at::Tensor*>> tensors) {
  for (const auto& [name, t] : tensors) {
    EMB_OPT_CHECK(t == nullptr || !t->defined() || t->device() == device, op, ": ", name, " must be on ", device,
                  " like the other arguments, got ", t->device());
  }
}

// Whether the value checks of t walk its data in a host loop (a CPU tensor) or run as reductions where it lives
// (a device tensor). EMB_OPT_CHECKS_BY_REDUCTION=1, read once, sends CPU tensors down the reduction paths too:
// tests/test_kernels_bounds.py runs the device paths that way on machines without a GPU.
inline bool checks_by_loop(const at::Tensor& t) {
  static const bool by_reduction = [] {
    const char* env = std::getenv("EMB_OPT_CHECKS_BY_REDUCTION");
    return env != nullptr && env[0] == '1';
  }();
  return t.is_cpu() && !by_reduction;
}

// t's data, or nullptr for an undefined tensor (an absent optional argument).
template <typename T>
const T* data_or_null(const at::Tensor& t) {
  return t.defined() ? t.data_ptr<T>() : nullptr;
}

// "[4]" for flat position 4 of a 1-D tensor, "[2, 0]" for flat position 4 of a [3, 2] one.
inline std::string position_string(c10::IntArrayRef sizes, int64_t flat) {
  std::string out = "]";
  for (int64_t d = static_cast<int64_t>(sizes.size()) - 1; d >= 0; --d) {
    const int64_t extent = std::max<int64_t>(sizes[d], 1);
    out.insert(0, std::to_string(flat % extent));
    flat /= extent;
    if (d > 0) out.insert(0, ", ");
  }
  return (sizes.empty() ? "[" + std::to_string(flat) : "[") + out;
}

// Raises IndexError "<op>: <name>[<position>] = <value> is outside [<lo>, <hi>) (<what>)" for element `flat` of t.
[[noreturn]] inline void raise_outside(const char* op, const char* name, const at::Tensor& t, int64_t flat, int64_t lo,
                                       int64_t hi, const std::string& what) {
  const int64_t value = t.reshape({-1})[flat].item<int64_t>();
  EMB_OPT_CHECK_INDEX(false, op, ": ", name, position_string(t.sizes(), flat), " = ", value, " is outside [", lo, ", ",
                      hi, ")", what.empty() ? "" : " (", what, what.empty() ? "" : ")");
  std::abort();  // unreachable: EMB_OPT_CHECK_INDEX(false, ...) throws
}

namespace detail {

// First i in [begin, end) with p[i] outside [lo, last], else INT64_MAX. Blocks are scanned branch-free first, in
// T (vectorised), and only a block holding a bad value is searched element by element.
template <typename T>
int64_t first_outside_span(const T* p, int64_t begin, int64_t end, int64_t lo, int64_t last) {
  constexpr int64_t kMin = std::numeric_limits<T>::min(), kMax = std::numeric_limits<T>::max();
  if (lo > kMax || last < kMin || lo > last) return begin < end ? begin : std::numeric_limits<int64_t>::max();
  const T lo_t = static_cast<T>(std::max(lo, kMin)), last_t = static_cast<T>(std::min(last, kMax));
  constexpr int64_t kBlock = 256;
  for (int64_t b = begin; b < end; b += kBlock) {
    const int64_t e = std::min(end, b + kBlock);
    int any = 0;
    for (int64_t i = b; i < e; ++i) any |= static_cast<int>(p[i] < lo_t) | static_cast<int>(p[i] > last_t);
    if (any == 0) continue;
    for (int64_t i = b; i < e; ++i) {
      if (p[i] < lo_t || p[i] > last_t) return i;
    }
  }
  return std::numeric_limits<int64_t>::max();
}

// A device tensor's (any, first index) of a bool mask, read back in one copy.
inline int64_t first_true_on_device(const at::Tensor& mask) {
  const auto reduced = at::max(mask.to(at::kInt), 0);
  const auto host = at::stack({std::get<0>(reduced).to(at::kLong), std::get<1>(reduced)}).cpu();
  return host[0].item<int64_t>() != 0 ? host[1].item<int64_t>() : -1;
}

}  // namespace detail

// An upper bound that bounds nothing: first_outside(t, 0, kUnbounded) finds negative values.
constexpr int64_t kUnbounded = std::numeric_limits<int64_t>::max();

// First flat position of the integer tensor t whose value is outside [lo, hi) ([lo, kUnbounded] when
// hi == kUnbounded), or -1.
inline int64_t first_outside(const at::Tensor& t, int64_t lo, int64_t hi) {
  if (t.numel() == 0) return -1;
  const int64_t last = hi == kUnbounded ? kUnbounded : hi - 1;
  if (!checks_by_loop(t)) {
    const auto flat = t.reshape({-1}).to(at::kLong);
    return detail::first_true_on_device(flat.lt(lo).logical_or_(flat.gt(last)));
  }
  const at::Tensor c = t.contiguous();
  int64_t first = std::numeric_limits<int64_t>::max();
  AT_DISPATCH_INTEGRAL_TYPES(c.scalar_type(), "first_outside", [&] {
    const scalar_t* p = c.data_ptr<scalar_t>();
    first = at::parallel_reduce(
        0, c.numel(), 1 << 16, std::numeric_limits<int64_t>::max(),
        [&](int64_t begin, int64_t end, int64_t found) {
          return std::min(found, detail::first_outside_span(p, begin, end, lo, last));
        },
        [](int64_t a, int64_t b) { return std::min(a, b); });
  });
  return first == std::numeric_limits<int64_t>::max() ? -1 : first;
}

// Every element of t in [lo, hi); `what` says what the range is, for the message.
inline void check_in_range(const char* op, const char* name, const at::Tensor& t, int64_t lo, int64_t hi,
                           const std::string& what) {
  const int64_t bad = first_outside(t, lo, hi);
  if (bad >= 0) raise_outside(op, name, t, bad, lo, hi, what);
}

// An offsets-like int64 array (CSR row starts): its first and last values and the first position i where
// t[i + 1] < t[i] (-1 if none).
struct OffsetsFacts {
  int64_t first = 0, last = 0, first_decrease = -1;
};

inline OffsetsFacts offsets_facts(const at::Tensor& t) {
  OffsetsFacts facts;
  const int64_t n = t.numel();
  if (n == 0) return facts;
  if (!checks_by_loop(t)) {
    const auto flat = t.reshape({-1});
    const auto drop = flat.narrow(0, 1, n - 1).lt(flat.narrow(0, 0, n - 1));
    const auto reduced = at::max(at::cat({drop, at::ones({1}, drop.options())}).to(at::kInt), 0);
    const auto host = at::stack({flat[0], flat[n - 1], std::get<0>(reduced).to(at::kLong), std::get<1>(reduced)}).cpu();
    const int64_t* h = host.data_ptr<int64_t>();
    return {h[0], h[1], h[3] < n - 1 ? h[3] : -1};
  }
  const at::Tensor c = t.contiguous();
  const int64_t* p = c.data_ptr<int64_t>();
  facts.first = p[0];
  facts.last = p[n - 1];
  constexpr int64_t kBlock = 256;  // branch-free scan per block, as in first_outside_span
  for (int64_t b = 0; b + 1 < n && facts.first_decrease < 0; b += kBlock) {
    const int64_t e = std::min(n - 1, b + kBlock);
    bool any = false;
    for (int64_t i = b; i < e; ++i) any |= p[i + 1] < p[i];
    for (int64_t i = b; any && i < e; ++i) {
      if (p[i + 1] < p[i]) {
        facts.first_decrease = i;
        break;
      }
    }
  }
  return facts;
}

// An offsets-like array over `count` elements: starts at 0, never decreases, and ends at most at `count`
// (exactly at `count` when `exact_end`). `step` names what position i is, e.g. "bag".
inline void check_offsets_facts(const char* op, const char* name, const OffsetsFacts& facts, int64_t count,
                                bool exact_end, const char* count_what, const char* step) {
  EMB_OPT_CHECK_INDEX(facts.first == 0, op, ": ", name, "[0] must be 0, got ", facts.first);
  EMB_OPT_CHECK_INDEX(facts.first_decrease < 0, op, ": ", name, " decrease at ", step, " ", facts.first_decrease);
  if (exact_end) {
    EMB_OPT_CHECK_INDEX(facts.last == count, op, ": ", name, "[-1] = ", facts.last, " must equal the ", count, " ",
                        count_what);
  } else {
    EMB_OPT_CHECK_INDEX(facts.last <= count, op, ": ", name, "[-1] = ", facts.last, " exceeds the ", count, " ",
                        count_what);
  }
}

}  // namespace emb_opt
