// EMB_OPT_CHECK(cond, parts...): TORCH_CHECK whose message is built WITHOUT iostreams.
//
// Why: TORCH_CHECK(cond, "a", 3, "b") formats its parts with std::ostringstream (c10::str). On the lent GPU
// image (g++ 13.3, torch 2.11+cu130, Python 3.12) that formatting, compiled into this library, segfaulted inside
// libstdc++'s ostream code (cuda-gdb: std::ostream::_M_insert<long> called from vhpi_insert_cpu), so every
// "clear error" of the ops crashed the process instead of raising. Messages are now concatenated here with
// std::to_string / snprintf and handed to TORCH_CHECK as ONE std::string, which c10 passes through untouched.
// The message is only built when the check fails.
#pragma once
#include <c10/core/Device.h>
#include <c10/core/ScalarType.h>
#include <c10/util/ArrayRef.h>
#include <c10/util/Exception.h>

#include <cstdio>
#include <string>
#include <type_traits>

namespace emb_opt {
namespace detail {

inline void append_part(std::string& out, const char* part) { out += part; }
inline void append_part(std::string& out, const std::string& part) { out += part; }
inline void append_part(std::string& out, char part) { out += part; }
inline void append_part(std::string& out, bool part) { out += part ? "true" : "false"; }
template <typename T, std::enable_if_t<std::is_integral_v<T> && !std::is_same_v<T, bool> && !std::is_same_v<T, char>, int> = 0>
inline void append_part(std::string& out, T part) {
  out += std::to_string(part);
}
inline void append_part(std::string& out, double part) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), "%g", part);
  out += buffer;
}
inline void append_part(std::string& out, c10::ScalarType part) { out += c10::toString(part); }
inline void append_part(std::string& out, const c10::Device& part) {
  out += c10::DeviceTypeName(part.type(), /*lower_case=*/true);
  if (part.has_index()) {
    out += ':';
    out += std::to_string(static_cast<int>(part.index()));
  }
}
inline void append_part(std::string& out, c10::IntArrayRef part) {
  out += '[';
  for (size_t i = 0; i < part.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(part[i]);
  }
  out += ']';
}

template <typename... Parts>
std::string check_message(const Parts&... parts) {
  std::string out;
  (append_part(out, parts), ...);
  return out;
}

}  // namespace detail
}  // namespace emb_opt

#define EMB_OPT_CHECK(cond, ...) TORCH_CHECK(cond, ::emb_opt::detail::check_message(__VA_ARGS__))
// The same for an index outside what it indexes: raises IndexError in Python (c10::IndexError).
#define EMB_OPT_CHECK_INDEX(cond, ...) TORCH_CHECK_INDEX(cond, ::emb_opt::detail::check_message(__VA_ARGS__))
// The same for a bad value of a user-facing argument: raises ValueError in Python (c10::ValueError).
#define EMB_OPT_CHECK_VALUE(cond, ...) TORCH_CHECK_VALUE(cond, ::emb_opt::detail::check_message(__VA_ARGS__))
