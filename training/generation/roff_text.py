"""Plain text out of a manual page's roff source: its sections, for the man(7) and mdoc(7) macros.

Enough of roff for the NAME and DESCRIPTION sections of Debian's manual pages, read without
``groff`` (not installed everywhere): requests and macros are lines starting with ``.`` or
``'``; the section macros are ``.SH`` (man) and ``.Sh`` (mdoc); paragraph macros (``.PP``,
``.TP``, ``.Pp``, ...) end a paragraph; font macros (``.B``, ``.BR``, ``.Nm``, ``.Ar``,
``.Fl``, ``.Xr`` ...) keep their text; escapes (``\\fB``, ``\\-``, ``\\(em``, ``\\*(..``)
become the characters they stand for or nothing. A page that only includes another (``.so``)
has no sections.

>>> src = '.TH LS 1\\n.SH NAME\\nls \\\\- list directory contents\\n.SH DESCRIPTION\\n.PP\\n' \\
...       'List information about the \\\\fBFILEs\\\\fR.\\n.TP\\n\\\\fB\\\\-a\\\\fR\\n'
>>> sections(src)["NAME"], paragraphs(sections(src)["DESCRIPTION"])
('ls - list directory contents', ['List information about the FILEs.', '-a'])
>>> sections('.Sh NAME\\n.Nm cat\\n.Nd concatenate files\\n')["NAME"]
'cat - concatenate files'
"""

from __future__ import annotations

import re
import shlex

PARAGRAPH_BREAK = "\n\n"
"""How :func:`sections` separates paragraphs in a section's text."""

_PARAGRAPH = {"PP", "P", "LP", "TP", "IP", "HP", "TQ", "Pp", "Bl", "El", "It", "Bd", "Ed", "D1", "Dl",
              "RS", "RE", "sp", "br", "nf", "fi", "EX", "EE", "in", "ti"}
_HEADING = {"SH", "Sh"}
_SUBHEADING = {"SS", "Ss"}
_DROP = {"TH", "Dd", "Dt", "Os", "ds", "de", "nr", "so", "ft", "ps", "ne", "hy", "nh", "ad", "na", "ig",
         "UC", "PD", "ll", "ie", "el", "if", "tr", "cc", "c2", "lf", "Bk", "Ek", "Ns", "Pf", "Sm"}
_ALTERNATING = {"BR", "RB", "BI", "IB", "IR", "RI"}
_CHARS = {"em": "—", "en": "–", "aq": "'", "lq": '"', "rq": '"', "dq": '"', "oq": "'", "cq": "'",
          "ha": "^", "ti": "~", "bu": "•", "co": "©", "rg": "®", "tm": "™", "mi": "-", "hy": "-",
          "ga": "`", "aa": "'", "Fo": "«", "Fc": "»", "->": "→", "<-": "←", "sl": "/", "rs": "\\",
          "pl": "+", "eq": "=", "mu": "×", "de": "°", "ct": "¢", "dg": "†", "fm": "′", "lh": "", "rh": ""}
_ESCAPE = re.compile(r"\\(?:"
                     r"f(?:\[[^\]]*\]|\(..|.)"       # font: \fB \f(CW \f[B]
                     r"|s[-+]?\d+"                    # size: \s-1 \s0
                     r"|\((..)"                       # character: \(em (group 1)
                     r"|\[([^\]]*)\]"                 # character: \[em] (group 2)
                     r"|\*(?:\[[^\]]*\]|\(..|.)"      # string: \*R \*(lq \*[x]
                     r"|[kgnz](?:\(..|\[[^\]]*\]|.)"  # registers, marks
                     r"|[hvwlLDxoXNSb]'[^']*'"        # motions, widths, drawings
                     r"|(.))", re.S)                  # single-character escapes (group 3)
_SINGLE = {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", "|": "", "^": "", "&": "",
           "%": "", ",": "", "/": "", ":": "", "c": "", "'": "'", "`": "`", ".": ".", "t": " ", "a": ""}
# mdoc's flag macro puts a dash before each argument; the rest keep their words
_MDOC_PREFIX = {"Fl": "-"}
_MDOC_KEEP = {"Nm", "Nd", "Ar", "Pa", "Cm", "Ic", "Em", "Sy", "Li", "Ql", "Dq", "Sq", "Qq", "Pq", "Op",
              "Ev", "Va", "Fn", "Fa", "Ft", "Dv", "Er", "Lk", "Mt", "Tn", "Ux", "At", "Bx", "Ox", "Nx", "Fx",
              "St", "Xo", "Xc", "Ao", "Ac", "Bo", "Bc", "Do", "Dc", "Po", "Pc", "Qo", "Qc", "So", "Sc",
              "B", "I", "R", "SM", "SB", "UR", "UE", "MT", "ME", "OP", "Aq", "Brq", "An", "Lb", "Rs", "Re"}


def unescape(text: str) -> str:
    """``text`` with roff escapes replaced by what they print (fonts and sizes by nothing)."""
    def sub(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        if name is not None:
            return _CHARS.get(name, "")
        single = m.group(3)
        if single is not None:
            return _SINGLE.get(single, "")
        return ""
    return _ESCAPE.sub(sub, text)


def _strip_comment(line: str) -> str:
    cut = line.find('\\"')
    return line if cut < 0 else line[:cut]


def _args(rest: str) -> list[str]:
    try:
        return shlex.split(rest, posix=True)
    except ValueError:  # an unbalanced quote: words as they are
        return rest.split()


def _macro_text(name: str, rest: str, page_name: str) -> str:
    """What a text-carrying macro line prints (``page_name``: what mdoc's bare ``.Nm`` prints)."""
    args = _args(rest)
    if name == "Nm" and not args:
        return page_name
    if name in _ALTERNATING:
        return "".join(args)
    if name == "Xr" and len(args) >= 2:
        return f"{args[0]}({args[1]})" + "".join(args[2:])
    if name == "Nd":  # mdoc's one-line description: the man(7) NAME line's "name - text"
        return "- " + " ".join(args)
    if name in _MDOC_PREFIX:
        return " ".join(_MDOC_PREFIX[name] + a for a in args) if args else _MDOC_PREFIX[name]
    if name in _MDOC_KEEP:
        return " ".join(args)
    return ""


def sections(source: str) -> dict[str, str]:
    """Section title (upper case) -> its text, paragraphs separated by :data:`PARAGRAPH_BREAK`;
    each paragraph's lines joined by spaces, escapes resolved. The first section wins when a
    title repeats."""
    out: dict[str, str] = {}
    title: str | None = None
    paras: list[list[str]] = []
    page_name = ""  # mdoc: the first ``.Nm name``; a bare ``.Nm`` later prints it

    def close() -> None:
        if title is not None and title not in out:
            text = PARAGRAPH_BREAK.join(" ".join(p) for p in paras if p)
            out[title] = text
    for raw in source.splitlines():
        line = _strip_comment(raw).rstrip()
        if line[:1] in (".", "'"):
            body = line[1:].lstrip()
            name, _, rest = body.partition(" ")
            if name in _HEADING:
                close()
                title = unescape(" ".join(_args(rest))).strip().upper()
                paras = [[]]
                continue
            if title is None:
                continue
            if name in _PARAGRAPH or name in _SUBHEADING:
                paras.append([])
                if name in _SUBHEADING:
                    paras.append([])
                continue
            if name in _DROP or not name:
                continue
            if name == "Nm" and not page_name:
                page_name = " ".join(_args(rest))
            text = _macro_text(name, rest, page_name)
        else:
            if title is None:
                continue
            text = line
        text = " ".join(unescape(text).split())
        if text:
            paras[-1].append(text)
    close()
    return out


def paragraphs(section_text: str) -> list[str]:
    """The paragraphs of one section's text (as :func:`sections` gives it)."""
    return [p for p in section_text.split(PARAGRAPH_BREAK) if p.strip()]
