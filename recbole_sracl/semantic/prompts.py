"""User and item prompts (paper section 4.2.1 / 4.3.1, Figure 3), built from TRAINING data only.

A prompt is a system message (the instruction) and a user message (the data). With ``--llm=none`` the user
message itself is what gets encoded (the paper's "w/o LLM" ablation); with an LLM its answer is encoded.
Templates can be overridden per dataset with the ``semantic_prompts`` yaml key.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from recbole_sracl.data.sequences import prefix_token
from recbole_sracl.errors import ConfigError, DatasetError

USER_SYSTEM = (
    "You are an expert in recommender systems. The user message lists the items one user interacted with, "
    "oldest first, separated by semicolons. Summarise this user's preferences in at most 100 words. "
    "Reply with the summary only."
)
USER_MESSAGE = "{items}"
ITEM_SYSTEM = (
    "You are an expert in recommender systems. The user message describes an item and lists sequences of "
    "items that users interacted with together with it. In at most 100 words, summarise the item's basic "
    "information and analyse which users are likely to be interested in it. Reply with the summary only."
)
ITEM_MESSAGE = "{attributes}\nInteraction sequences containing this item:\n{contexts}"
DEFAULT_TEMPLATES = {
    "user_system": USER_SYSTEM, "user_message": USER_MESSAGE,
    "item_system": ITEM_SYSTEM, "item_message": ITEM_MESSAGE,
}
PLACEHOLDERS = {"user_message": {"items"}, "item_message": {"attributes", "contexts"}}


@dataclass(frozen=True)
class Prompt:
    """One request: ``kind`` is ``user``, ``prefix`` or ``item``; ``token`` is the original id in the atomic files."""

    kind: str
    token: str
    system: str
    message: str

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps([self.system, self.message]).encode("utf-8")).hexdigest()


def templates(overrides: Mapping[str, str] | None) -> dict[str, str]:
    """The default templates with the yaml overrides applied.

    Raises:
        ConfigError: an unknown template name, or a message template missing a placeholder.
    """
    merged = dict(DEFAULT_TEMPLATES)
    for name, text in (overrides or {}).items():
        if name not in DEFAULT_TEMPLATES:
            raise ConfigError(f"semantic_prompts: unknown template '{name}' (known: {', '.join(DEFAULT_TEMPLATES)})")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"semantic_prompts: template '{name}' must be a non-empty string")
        merged[name] = text
    for name, needed in PLACEHOLDERS.items():
        for placeholder in needed:
            if "{" + placeholder + "}" not in merged[name]:
                raise ConfigError(f"semantic_prompts: template '{name}' must contain {{{placeholder}}}")
    return merged


def clean_text(value: object, max_chars: int | None = None) -> str:
    """Collapse whitespace; empty, NaN and None become ''; long text is cut at a word boundary."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    text = " ".join(str(value).split())
    if text.lower() in {"nan", "none", "null"}:
        return ""
    if max_chars and len(text) > max_chars:
        cut = text[:max_chars].rsplit(" ", 1)[0]
        text = (cut or text[:max_chars]) + " ..."
    return text


def format_value(value: str, field_type: str) -> str:
    """Floats as written without a useless ``.0`` (``10486.0`` -> ``10486``)."""
    if field_type == "float" and value:
        try:
            return f"{float(value):g}"
        except ValueError:
            return value
    return value


def item_attributes(
    row: Mapping[str, str], fields: Sequence[str], field_types: Mapping[str, str], max_chars: int
) -> str:
    """``title: X; brand: Y; ...`` with empty fields skipped."""
    parts = []
    for field in fields:
        value = format_value(clean_text(row.get(field), max_chars), field_types.get(field, "token_seq"))
        if value:
            parts.append(f"{field.replace('_', ' ')}: {value}")
    return "; ".join(parts)


class PromptBuilder:
    """Builds the prompts of one dataset from item text and per-user TRAINING histories.

    Args:
        item_text: ``{item token: {field: text}}`` read from the ``.item`` file.
        field_types: ``{field: atomic type}`` of the ``.item`` header.
        title_field: field naming an item in user prompts and item contexts.
        item_fields: fields described in item prompts, in order.
        histories: ``{user token: [item tokens of the training part, oldest first]}``.
    """

    def __init__(
        self,
        item_text: Mapping[str, Mapping[str, str]],
        field_types: Mapping[str, str],
        title_field: str,
        item_fields: Sequence[str],
        histories: Mapping[str, Sequence[str]],
        template_overrides: Mapping[str, str] | None = None,
        max_user_items: int = 20,
        item_contexts: int = 10,
        context_length: int = 10,
        field_chars: int = 300,
        seed: int = 2024,
    ):
        self.item_text, self.field_types = item_text, field_types
        self.title_field, self.item_fields = title_field, list(item_fields)
        self.histories = histories
        self.templates = templates(template_overrides)
        self.max_user_items, self.item_contexts = max_user_items, item_contexts
        self.context_length, self.field_chars = context_length, field_chars
        self.seed = seed
        self._titles: dict[str, str] = {}

    def title(self, item: str) -> str:
        """The item's name as shown in sequences ('' when it has none)."""
        if item not in self._titles:
            self._titles[item] = clean_text(self.item_text.get(item, {}).get(self.title_field), self.field_chars)
        return self._titles[item]

    def sequence_text(self, items: Iterable[str]) -> str:
        return "; ".join(title for title in (self.title(item) for item in items) if title)

    def user_prompt(self, user: str) -> Prompt:
        return self._history_prompt("user", user, self.histories[user])

    def prefix_prompts(self) -> list[Prompt]:
        """One user prompt per training prefix (the official code's granularity): for a user whose training
        part has ``m`` items, the prefixes of ``1 .. m-1`` items, i.e. the inputs of the user's training rows.
        Tokens are ``<user>:<prefix length>`` (:func:`recbole_sracl.data.sequences.prefix_token`)."""
        return [
            self._history_prompt("prefix", prefix_token(user, length), history[:length])
            for user, history in self.histories.items()
            for length in range(1, len(history))
        ]

    def _history_prompt(self, kind: str, token: str, history: Sequence[str]) -> Prompt:
        items = list(history)[-self.max_user_items:]
        message = self.templates["user_message"].format(items=self.sequence_text(items) or "(no item names)")
        return Prompt(kind, token, self.templates["user_system"], message)

    def contexts(self, item: str, users_with_item: Sequence[str]) -> list[str]:
        """Up to ``item_contexts`` windows of training sequences that contain ``item`` (seeded choice)."""
        chosen = list(users_with_item)
        if len(chosen) > self.item_contexts:
            chosen = random.Random(f"{self.seed}:{item}").sample(chosen, self.item_contexts)
        windows = []
        for user in chosen:
            history = list(self.histories[user])
            where = history.index(item)
            start = max(0, min(where - self.context_length // 2, len(history) - self.context_length))
            text = self.sequence_text(history[start:start + self.context_length])
            if text:
                windows.append(text)
        return windows

    def item_prompt(self, item: str, users_with_item: Sequence[str]) -> Prompt:
        attributes = item_attributes(self.item_text.get(item, {}), self.item_fields, self.field_types,
                                     self.field_chars)
        contexts = "\n".join(f"{n}. {text}" for n, text in enumerate(self.contexts(item, users_with_item), 1))
        message = self.templates["item_message"].format(
            attributes=attributes or "(no attributes)", contexts=contexts or "(none)"
        )
        return Prompt("item", item, self.templates["item_system"], message)

    def all_prompts(self) -> tuple[list[Prompt], list[Prompt]]:
        """Prompts for every user with a training part and every item that appears in one."""
        users_of_item: dict[str, list[str]] = {}
        for user, history in self.histories.items():
            for item in dict.fromkeys(history):
                users_of_item.setdefault(item, []).append(user)
        user_prompts = [self.user_prompt(user) for user in self.histories]
        item_prompts = [self.item_prompt(item, users) for item, users in users_of_item.items()]
        return user_prompts, item_prompts

    def items_without_text(self, items: Iterable[str]) -> list[str]:
        """Items with no text in any described field."""
        return [
            item for item in items
            if not any(clean_text(self.item_text.get(item, {}).get(field)) for field in
                       dict.fromkeys([self.title_field] + self.item_fields))
        ]


def check_items_have_text(builder: PromptBuilder, items: Sequence[str], item_file: str, allow: bool) -> None:
    """Raise a :class:`DatasetError` for items without any text unless ``semantic_allow_missing_text``."""
    missing = builder.items_without_text(items)
    if missing and not allow:
        raise DatasetError(
            f"{len(missing)} of {len(items)} training items have no text in "
            f"{', '.join(dict.fromkeys([builder.title_field] + builder.item_fields))} of {item_file} (e.g. item "
            f"'{missing[0]}'); fill in their text, point semantic_item_fields at fields that have it, or set "
            f"semantic_allow_missing_text: True to describe them by their interaction contexts only"
        )
