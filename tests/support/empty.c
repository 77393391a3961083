/* keeps the test support library non-empty */
typedef int mb_test_support_empty;
