"""Token layout: where the special and class tokens sit after the code vocabulary.

    0 … num_codes-1          image codes
    num_codes + 0            PAD
    num_codes + 1            BOS
    num_codes + 2            EOS
    num_codes + 3            UNK   (invalid code in the data; never a target, never sampled)
    num_codes + 4 + c        class c, for c in 0 … num_classes-1
    num_codes + 4 + C        null class (classifier-free guidance)

An unconditional layout (num_classes=0) has no class tokens: sequences are
``[BOS] codes [EOS]``; a conditional one is ``[class][BOS] codes [EOS]``.
The layout is stored in every checkpoint and read back, never re-derived.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TokenLayout:
    num_codes: int
    num_classes: int = 0

    def __post_init__(self):
        if not isinstance(self.num_codes, int) or self.num_codes < 1:
            raise ValueError(f"TokenLayout.num_codes must be a positive int, got {self.num_codes!r}")
        if not isinstance(self.num_classes, int) or self.num_classes < 0:
            raise ValueError(
                f"TokenLayout.num_classes must be a non-negative int, got {self.num_classes!r}"
            )

    @property
    def pad_id(self) -> int:
        return self.num_codes

    @property
    def bos_id(self) -> int:
        return self.num_codes + 1

    @property
    def eos_id(self) -> int:
        return self.num_codes + 2

    @property
    def unk_id(self) -> int:
        return self.num_codes + 3

    @property
    def conditional(self) -> bool:
        return self.num_classes > 0

    def class_id(self, label: int) -> int:
        if not 0 <= label < self.num_classes:
            raise ValueError(f"class {label} outside 0..{self.num_classes - 1}")
        return self.num_codes + 4 + label

    @property
    def first_class_id(self) -> int:
        return self.num_codes + 4

    @property
    def null_class_id(self) -> int:
        if not self.conditional:
            raise ValueError("an unconditional layout has no null class")
        return self.num_codes + 4 + self.num_classes

    @property
    def prefix_len(self) -> int:
        """Tokens before the first code: [class][BOS] or [BOS]."""
        return 2 if self.conditional else 1

    @property
    def vocab_size(self) -> int:
        return self.num_codes + 4 + (self.num_classes + 1 if self.conditional else 0)

    def sequence_length(self, num_positions: int) -> int:
        """Tokens in a full sequence for an image of `num_positions` codes."""
        return self.prefix_len + num_positions + 1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TokenLayout:
        return cls(num_codes=int(d["num_codes"]), num_classes=int(d["num_classes"]))
