"""One client's subscription set and the rules of docs/protocol.md section 3."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache

from attrs import define, field

ALL = "all"


@define
class SubscriptionSet:
    """The topic names a client holds; ``all`` stands for every topic, present and future."""

    names: set[str] | frozenset[str] = field(factory=set)
    """A frozenset until the client changes it: the default set, shared by every session that
    holds it (an idle client pays no set of its own); the first change makes it a set."""
    explicit: bool = False
    """False until the first subscribe, which replaces the configured default set."""

    @classmethod
    def default(cls, names: Iterable[str]) -> SubscriptionSet:
        """A client's configured default set (not ``explicit``), shared with every other client
        holding the same names."""
        return cls(_shared(frozenset(names)))

    @property
    def wants_all(self) -> bool:
        return ALL in self.names

    def effective(self, topics: Sequence[str]) -> list[str]:
        """The concrete topics this set receives, in the server's topic order."""
        if ALL in self.names:
            return list(topics)
        return [t for t in topics if t in self.names]

    def subscribe(self, names: Iterable[str]) -> None:
        if not self.explicit:
            self.names = set()
            self.explicit = True
        self.names.update(names)

    def unsubscribe(self, names: Iterable[str], topics: Sequence[str]) -> None:
        # After an unsubscribe the set is the client's own, no longer the default: a later
        # subscribe adds to it.
        self.explicit = True
        if isinstance(self.names, frozenset):
            self.names = set(self.names)  # the shared default: this client's own copy from now on
        names = set(names)  # a set of names: their order in the request does not matter
        if ALL in names:
            self.names.discard(ALL)
        elif ALL in self.names and names:
            # Removing one topic from "all" turns it into every current topic but that one,
            # so the client really stops receiving it.
            self.names = set(topics)
        self.names -= names


@lru_cache(maxsize=256)
def _shared(names: frozenset[str]) -> frozenset[str]:
    """The one frozenset of these names: an idle client's default set costs it nothing (a set
    of its own was 216 bytes of its ~9 KiB).  Bounded: the default set changes only on reload,
    and the sets cut down by a token's ``topics`` claim are few."""
    return names
