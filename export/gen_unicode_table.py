#!/usr/bin/env python3
"""Generate unicode_table.h: the character classes the Tekken pre-tokenizer pattern needs.

Usage (from the repository root; any python3, standard library only):
    python3 export/gen_unicode_table.py [UNICODE_DIR] > unicode_table.h

UNICODE_DIR holds UnicodeData.txt and PropList.txt (default /usr/share/unicode, Debian's
unicode-data package). The pattern (MODEL.md section 7) uses the general categories Lu, Lt, Lm,
Lo, Ll, M* and N*, and \\s, which is the White_Space property. Every code point gets exactly one
class: White_Space characters are all Cc/Zs/Zl/Zp, so they never collide with L*, M* or N*
(checked below).

The table is a sorted list of ranges, each written as one uint32: (first code point << 8) | class.
A range runs up to the next entry's first code point minus one, and the entries cover
U+0000..U+10FFFF without gaps (unassigned code points are UNI_OTHER), so a binary search for the
last entry whose first code point is <= c gives the class of c.
"""
import os
import sys

CLASSES = ["UNI_OTHER", "UNI_LU", "UNI_LL", "UNI_LT", "UNI_LM", "UNI_LO", "UNI_M", "UNI_N", "UNI_SPACE"]
CATEGORY_CLASS = {"Lu": 1, "Ll": 2, "Lt": 3, "Lm": 4, "Lo": 5,
                  "Mn": 6, "Mc": 6, "Me": 6, "Nd": 7, "Nl": 7, "No": 7}
MAX_CODE_POINT = 0x10FFFF


def read_categories(path):
    """Class of every code point listed in UnicodeData.txt (a bytearray over U+0000..U+10FFFF).

    Large blocks (CJK ideographs, Hangul syllables, ...) are listed as two lines,
    "<Name, First>" and "<Name, Last>"; every code point between them has their category.
    """
    cls = bytearray(MAX_CODE_POINT + 1)
    first = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.rstrip("\n").split(";")
            cp, name, category = int(fields[0], 16), fields[1], fields[2]
            if name.endswith(", First>"):
                first = cp
                continue
            lo = cp
            if name.endswith(", Last>"):
                assert first is not None, f"{path}: {line!r} without its First line"
                lo, first = first, None
            for c in range(lo, cp + 1):
                cls[c] = CATEGORY_CLASS.get(category, 0)
    return cls


def read_property(path, prop):
    """Code points that have the binary property `prop` in PropList.txt."""
    points = set()
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#")[0].strip()
            if not line:
                continue
            cps, name = [s.strip() for s in line.split(";")]
            if name != prop:
                continue
            lo, _, hi = cps.partition("..")
            points.update(range(int(lo, 16), int(hi or lo, 16) + 1))
    return points


def unicode_version(proplist):
    """The version from PropList.txt's first line, "# PropList-15.0.0.txt"."""
    with open(proplist, encoding="utf-8") as f:
        first = f.readline().strip()
    assert first.startswith("# PropList-") and first.endswith(".txt"), first
    return first[len("# PropList-"):-len(".txt")]


def main():
    unidir = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/unicode"
    unicode_data = os.path.join(unidir, "UnicodeData.txt")
    proplist = os.path.join(unidir, "PropList.txt")
    version = unicode_version(proplist)

    cls = read_categories(unicode_data)
    for c in sorted(read_property(proplist, "White_Space")):
        assert cls[c] == 0, f"U+{c:04X} is White_Space and in class {CLASSES[cls[c]]}"
        cls[c] = CLASSES.index("UNI_SPACE")

    ranges = []  # (first code point, class), merged where neighbours share a class
    for c in range(MAX_CODE_POINT + 1):
        if not ranges or ranges[-1][1] != cls[c]:
            ranges.append((c, cls[c]))

    out = sys.stdout
    out.write(f"""\
// unicode_table.h: the character classes of the Tekken pre-tokenizer (see run.c, tokenizer section).
// Generated from Unicode {version} UnicodeData.txt and PropList.txt by
//     python3 export/gen_unicode_table.py {unidir} > unicode_table.h
// Do not edit by hand.
//
// UNICODE_RANGES[i] = (first code point << 8) | class. Range i runs up to UNICODE_RANGES[i+1] >> 8,
// exclusive; the ranges cover U+0000..U+10FFFF, so the class of c is that of the last entry whose
// first code point is <= c (binary search). Unassigned code points are UNI_OTHER.
#ifndef UNICODE_TABLE_H
#define UNICODE_TABLE_H

#include <stdint.h>

#define UNICODE_VERSION "{version}"

enum {{
    UNI_OTHER,   // everything below: punctuation, symbols, controls, unassigned, ...
    UNI_LU,      // Lu: uppercase letter
    UNI_LL,      // Ll: lowercase letter
    UNI_LT,      // Lt: titlecase letter
    UNI_LM,      // Lm: modifier letter
    UNI_LO,      // Lo: other letter (CJK, Arabic, Hebrew, ...)
    UNI_M,       // Mn, Mc, Me: marks
    UNI_N,       // Nd, Nl, No: numbers
    UNI_SPACE,   // the White_Space property (what \\s matches)
}};

#define UNICODE_N_RANGES {len(ranges)}
static const uint32_t UNICODE_RANGES[UNICODE_N_RANGES] = {{
""")
    per_line = 6
    for i in range(0, len(ranges), per_line):
        chunk = ranges[i:i + per_line]
        out.write("    " + " ".join(f"0x{first:06X}<<8|{CLASSES[c]}," for first, c in chunk) + "\n")
    out.write("};\n\n")
    out.write("// The same classes for U+0000..U+00FF, indexed directly: most text is mostly ASCII.\n")
    out.write("static const uint8_t UNICODE_LATIN1[256] = {\n")
    for i in range(0, 256, 16):
        out.write("    " + " ".join(f"{cls[c]}," for c in range(i, i + 16)) + f"   // U+{i:04X}\n")
    out.write("};\n\n#endif // UNICODE_TABLE_H\n")


if __name__ == "__main__":
    main()
