/* test_olog.c - log lines stay one line of plain text whatever a peer's text holds. */
#include <criterion/criterion.h>
#include <string.h>

#include "olog.h"

static const char *clean(const char *src, size_t len, size_t cap)
{
	static char buf[256];
	size_t n = olog_clean(buf, cap, src, len);
	cr_assert_eq(n, strlen(buf));
	cr_assert_lt(n, cap);
	return buf;
}

Test(olog, control_characters_are_shown_not_obeyed)
{
	const char s[] = "a\x1b[2Jb\nc\rd\te\x7f" "f\x01g";
	cr_expect_str_eq(clean(s, sizeof(s) - 1, 256), "a\\x1b[2Jb c d\te\\x7ff\\x01g");
	/* C1 CSI as UTF-8 (U+009B) is escaped; other UTF-8 is kept */
	const char u[] = "x\xc2\x9by \xc3\xa9 \xc2\xa0";
	cr_expect_str_eq(clean(u, sizeof(u) - 1, 256), "x\\xc2\\x9by \xc3\xa9 \xc2\xa0");
	const char nul[] = {'a', 0, 'b'};
	cr_expect_str_eq(clean(nul, 3, 256), "a\\x00b");
}

Test(olog, output_is_cut_before_an_escape_that_does_not_fit)
{
	cr_expect_str_eq(clean("abc\x1b", 4, 7), "abc");
	cr_expect_str_eq(clean("abc\x1b", 4, 8), "abc\\x1b");
	cr_expect_str_eq(clean("abcdef", 6, 4), "abc");
	cr_expect_str_eq(clean("", 0, 1), "");
}
