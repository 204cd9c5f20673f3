// gtest helpers for qkern::Status: a failed call must carry the right code
// and a message that names what was wrong.
#ifndef QKERN_TESTS_STATUS_MATCHERS_H_
#define QKERN_TESTS_STATUS_MATCHERS_H_

#include <string>

#include <gtest/gtest.h>

#include "qkern/base/status.h"

// Assert / expect that a qkern call succeeded, printing its message if not.
#define QKERN_ASSERT_OK(expr)                       \
  do {                                              \
    const ::qkern::Status status_ = (expr);         \
    ASSERT_TRUE(status_.ok()) << status_.message(); \
  } while (0)
#define QKERN_EXPECT_OK(expr)                       \
  do {                                              \
    const ::qkern::Status status_ = (expr);         \
    EXPECT_TRUE(status_.ok()) << status_.message(); \
  } while (0)

namespace qkern {
namespace test {

inline ::testing::AssertionResult Mentions(const Status& status,
                                           const std::string& text) {
  if (status.message().find(text) != std::string::npos) {
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure()
         << "message \"" << status.message() << "\" does not mention \"" << text
         << "\"";
}

inline void ExpectError(const Status& status, StatusCode code,
                        const std::string& mention) {
  EXPECT_FALSE(status.ok());
  EXPECT_EQ(static_cast<int>(status.code()), static_cast<int>(code))
      << status.message();
  EXPECT_TRUE(Mentions(status, mention));
}

}  // namespace test
}  // namespace qkern

#endif  // QKERN_TESTS_STATUS_MATCHERS_H_
