/* test_ovis.c - text from a peer is shown, not obeyed: in log lines (OVIS_LINE: one line,
 * tab kept) and in outpostctl's output (every control character written out). */
#include <criterion/criterion.h>
#include <string.h>

#include "ovis.h"

static const char *esc(const char *src, size_t len, size_t cap, unsigned flags)
{
	static char buf[256];
	size_t n = ovis_escape(buf, cap, src, len, flags);
	cr_assert_eq(n, strlen(buf));
	cr_assert_lt(n, cap);
	return buf;
}

Test(ovis, control_characters_are_shown_not_obeyed)
{
	const char s[] = "a\x1b[2Jb\nc\rd\te\x7f" "f\x01g";
	cr_expect_str_eq(esc(s, sizeof(s) - 1, 256, OVIS_LINE), "a\\x1b[2Jb c d\te\\x7ff\\x01g");
	cr_expect_str_eq(esc(s, sizeof(s) - 1, 256, 0),
	                 "a\\x1b[2Jb\\x0ac\\x0dd\\x09e\\x7ff\\x01g");
	/* C1 CSI as UTF-8 (U+009B) is escaped; other UTF-8 is kept */
	const char u[] = "x\xc2\x9by \xc3\xa9 \xc2\xa0";
	cr_expect_str_eq(esc(u, sizeof(u) - 1, 256, OVIS_LINE), "x\\u009by \xc3\xa9 \xc2\xa0");
	cr_expect_str_eq(esc(u, sizeof(u) - 1, 256, 0), "x\\u009by \xc3\xa9 \xc2\xa0");
	const char nul[] = {'a', 0, 'b'};
	cr_expect_str_eq(esc(nul, 3, 256, OVIS_LINE), "a\\x00b");
	/* a lone 0xc2 at the end is kept as it is */
	cr_expect_str_eq(esc("z\xc2", 2, 256, 0), "z\xc2");
}

Test(ovis, output_is_cut_before_an_escape_that_does_not_fit)
{
	cr_expect_str_eq(esc("abc\x1b", 4, 7, OVIS_LINE), "abc");
	cr_expect_str_eq(esc("abc\x1b", 4, 8, OVIS_LINE), "abc\\x1b");
	cr_expect_str_eq(esc("ab\xc2\x9b", 4, 8, 0), "ab");
	cr_expect_str_eq(esc("ab\xc2\x9b", 4, 9, 0), "ab\\u009b");
	cr_expect_str_eq(esc("abcdef", 6, 4, OVIS_LINE), "abc");
	cr_expect_str_eq(esc("", 0, 1, OVIS_LINE), "");
	/* nor is a character cut: two bytes of room take no half of a 2-byte one */
	cr_expect_str_eq(esc("\xc3\xa9\xc3\xa9", 4, 4, 0), "\xc3\xa9");
	cr_expect_str_eq(esc("a\xe2\x82\xac", 4, 4, 0), "a");
	cr_expect_str_eq(esc("a\xe2\x82\xac", 4, 5, 0), "a\xe2\x82\xac");
	/* a broken sequence is copied as far as it goes */
	cr_expect_str_eq(esc("\xe2\x82z", 3, 8, 0), "\xe2\x82z");
}

Test(ovis, a_message_is_made_one_line)
{
	char m[] = "cannot connect: connection to server at \"127.0.0.1\", port 1 failed:"
	           " Connection refused\n\tIs the server running?\n";
	cr_expect_eq(ovis_line(m), strlen(m));
	cr_expect_str_eq(m, "cannot connect: connection to server at \"127.0.0.1\", port 1"
	                    " failed: Connection refused Is the server running?");
	/* runs of spaces alone are kept; runs with a control are one space; ends trimmed */
	char s[] = "\t a  b \r\n c\t\td \n";
	cr_expect_str_eq((ovis_line(s), s), "a  b c d");
	char e[] = "\n\t ";
	cr_expect_eq(ovis_line(e), 0);
	/* a character cut by a buffer too small is dropped, whole ones are kept */
	char cut2[] = "x: caf\xc3", cut3[] = "y \xe2\x82", cut4[] = "z\xf0\x9f\x98", ok[] = "\xc3\xa9";
	cr_expect_str_eq((ovis_line(cut2), cut2), "x: caf");
	cr_expect_str_eq((ovis_line(cut3), cut3), "y");
	cr_expect_str_eq((ovis_line(cut4), cut4), "z");
	cr_expect_str_eq((ovis_line(ok), ok), "\xc3\xa9");
}

Test(ovis, a_prefix_ends_at_a_character)
{
	const char s[] = "ab\xc3\xa9" "c\xe2\x82\xac" "d\xf0\x9f\x98\x80";
	size_t n = sizeof(s) - 1;
	cr_expect_eq(ovis_fit(s, n, 100), n);
	cr_expect_eq(ovis_fit(s, n, 2), 2);
	cr_expect_eq(ovis_fit(s, n, 3), 2); /* not half of the e-acute */
	cr_expect_eq(ovis_fit(s, n, 4), 4);
	cr_expect_eq(ovis_fit(s, n, 6), 5); /* not part of the euro sign */
	cr_expect_eq(ovis_fit(s, n, 7), 5);
	cr_expect_eq(ovis_fit(s, n, 8), 8);
	cr_expect_eq(ovis_fit(s, n, 11), 9); /* not part of the emoji */
	cr_expect_eq(ovis_fit(s, n, 0), 0);
}

/* Text already cut (by snprintf) loses the character the cut fell in, and only that: ovis_line,
 * outpostctl's errors and wire_utf8_sanitize find it so. */
Test(ovis, a_character_cut_at_the_end_is_found)
{
	static const struct {
		const char *s;
		size_t whole;
	} cases[] = {
	    {"", 0},
	    {"abc", 3},
	    {"ab\xc3\xa9", 4},
	    {"ab\xc3", 2},
	    {"c\xe2\x82\xac", 4},
	    {"c\xe2\x82", 1},
	    {"c\xe2", 1},
	    {"d\xf0\x9f\x98\x80", 5},
	    {"d\xf0\x9f\x98", 1},
	    {"d\xf0\x9f", 1},
	    {"d\xf0", 1},
	    {"\xc3", 0},
	    /* not a cut: continuation bytes with no lead, or more than their lead wants */
	    {"x\x80", 2},
	    {"\x80\x80\x80\x80", 4},
	    {"\xc3\xa9\xa9", 3},
	    /* a broken sequence before the end is not looked at */
	    {"\xe2\x82z", 3},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		cr_expect_eq(ovis_whole(cases[i].s, strlen(cases[i].s)), cases[i].whole, "case %zu",
		             i);
	/* only the n bytes given are looked at */
	cr_expect_eq(ovis_whole("ab\xc3\xa9", 3), 2);
}

Test(ovis, bidirectional_controls_are_shown)
{
	/* RLO, PDF, LRI..PDI, LRM, RLM, ALM; U+2029 and U+202F, their neighbours, are kept */
	const char s[] = "a\xe2\x80\xae" "b\xe2\x80\xac" "c\xe2\x81\xa6\xe2\x81\xa9"
	                 "d\xe2\x80\x8e\xe2\x80\x8f" "e\xd8\x9c" "f\xe2\x80\xa9\xe2\x80\xaf";
	cr_expect_str_eq(esc(s, sizeof(s) - 1, 256, OVIS_LINE),
	                 "a\\u202eb\\u202cc\\u2066\\u2069d\\u200e\\u200fe\\u061cf"
	                 "\xe2\x80\xa9\xe2\x80\xaf");
	/* cut short: kept as bytes (not read past the end) */
	cr_expect_str_eq(esc("x\xe2\x80", 3, 256, 0), "x\xe2\x80");
	cr_expect_str_eq(esc("x\xd8", 2, 256, 0), "x\xd8");
	cr_expect_eq(ovis_bidi("\xe2\x80\xae", 3), 0x202e);
	cr_expect_eq(ovis_bidi("\xe2\x80\xae", 2), 0);
}
