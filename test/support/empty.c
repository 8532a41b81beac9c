/* Keeps the test support library non-empty before its sources exist. */
typedef int retryq_testutil_empty_t;
