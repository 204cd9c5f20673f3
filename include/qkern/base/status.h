// Status: how qkern reports bad input at its API boundary.
//
// Kernels never throw; entry points that validate their arguments return a
// Status whose message names what was wrong, what was expected and what was
// found.
#ifndef QKERN_BASE_STATUS_H_
#define QKERN_BASE_STATUS_H_

#include <stdarg.h>
#include <stdio.h>

#include <string>
#include <utility>

namespace qkern {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,
  kOutOfRange,
  kUnsupported,
  kResourceExhausted,
  kDataLoss,
  kIoError,
};

class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == StatusCode::kOk; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }

 private:
  StatusCode code_ = StatusCode::kOk;
  std::string message_;
};

namespace detail {
inline std::string FormatV(const char* format, va_list args) {
  va_list copy;
  va_copy(copy, args);
  const int size = vsnprintf(nullptr, 0, format, copy);
  va_end(copy);
  std::string text(size > 0 ? static_cast<size_t>(size) : 0, '\0');
  if (size > 0) vsnprintf(&text[0], text.size() + 1, format, args);
  return text;
}
}  // namespace detail

#if defined(__GNUC__)
#define QKERN_PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define QKERN_PRINTF_LIKE(fmt, args)
#endif

inline Status MakeStatus(StatusCode code, const char* format, ...)
    QKERN_PRINTF_LIKE(2, 3);
inline Status MakeStatus(StatusCode code, const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::string text = detail::FormatV(format, args);
  va_end(args);
  return Status(code, std::move(text));
}

#define QKERN_RETURN_IF_ERROR(expr)       \
  do {                                    \
    ::qkern::Status qkern_status_ = (expr); \
    if (!qkern_status_.ok()) return qkern_status_; \
  } while (0)

}  // namespace qkern

#endif  // QKERN_BASE_STATUS_H_
