"""From generated token ids to the text a client sees: incremental, stop-sequence aware.

The whole generated text is decoded again after each token (tokens that merge, and UTF-8
characters split over byte tokens, come out right); what is released is the part that can no
longer change or turn into a stop sequence: a trailing partial character (U+FFFD) and any
suffix that is the start of a stop sequence are held back until the next token decides.
"""

from __future__ import annotations


class TextStream:
    """Text released so far for one sequence.

    >>> class Tok:
    ...     def decode(self, ids, skip_special_tokens=True): return "".join(chr(i) for i in ids)
    >>> s = TextStream(Tok(), ("END",))
    >>> [s.push([ord(c) for c in "abE"]), s.push([ord(c) for c in "abEN"]), s.push([ord(c) for c in "abEND"])]
    ['ab', '', '']
    >>> s.stopped, s.text
    (True, 'ab')
    """

    def __init__(self, tokenizer, stop: tuple[str, ...]):
        self.tokenizer = tokenizer
        self.stop = tuple(stop)
        self.text = ""  # released so far
        self.stopped = False  # a stop sequence was found: the text ends before it

    def push(self, ids: list[int]) -> str:
        """The new text to release after the generated ``ids`` (all of them so far)."""
        full = self.tokenizer.decode(ids, skip_special_tokens=True)
        cut = min((i for i in (full.find(s, max(0, len(self.text) - len(s) + 1)) for s in self.stop)
                   if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._release(full[:cut])
        safe = len(full) - (1 if full.endswith("\ufffd") else 0)
        hold = 0
        for s in self.stop:  # hold back a suffix that may still grow into a stop sequence
            for k in range(min(len(s) - 1, safe), 0, -1):
                if full[safe - k:safe] == s[:k]:
                    hold = max(hold, k)
                    break
        safe -= hold
        return self._release(full[:max(safe, len(self.text))])

    def flush(self, ids: list[int]) -> str:
        """Release everything (the sequence ended without a stop sequence)."""
        return self._release(self.tokenizer.decode(ids, skip_special_tokens=True))

    def _release(self, upto: str) -> str:
        delta = upto[len(self.text):] if upto.startswith(self.text) else ""
        self.text += delta
        return delta
