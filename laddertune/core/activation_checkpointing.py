"""The activation checkpointing switches of a ``PreTrainedModel``, on a :class:`~laddertune.core.LadderModel`.

``transformers.Trainer`` with ``TrainingArguments(activation_checkpointing=True)`` (older transformers:
``gradient_checkpointing=True``) calls ``model.activation_checkpointing_enable(...)`` (or
``gradient_checkpointing_enable``), and ``is_activation_checkpointing`` says whether it is on. On a LadderModel they
switch LST's side checkpointing (``LadderConfig.side_checkpointing``): the frozen backbone runs without a graph, so
there is nothing of it to checkpoint, and the side layers are all that keep activations for the backward (with
``reentry_layers``, the backbone's re-run top layers too: side checkpointing recomputes them as well).
"""

from __future__ import annotations

from ..errors import ConfigError


class ActivationCheckpointing:
    """Mixed into LadderModel: ``activation_checkpointing_enable`` / ``_disable`` and ``is_activation_checkpointing``
    (with their ``gradient_checkpointing`` aliases) over the side network's checkpointing."""

    def activation_checkpointing_enable(
        self,
        activation_checkpointing_kwargs: dict | None = None,
        every_n_layers: int = 1,
        offload: bool = False,
    ) -> None:
        """Checkpoint every side layer (LST only). Accepts what Trainer passes; refuses what the side cannot do.

        Raises:
            ConfigError: not an LST model, or an option other than ``use_reentrant=False`` (the side layers always
                checkpoint non-reentrantly), ``every_n_layers=1`` and ``offload=False``.
        """
        kwargs = dict(activation_checkpointing_kwargs or {})
        reentrant = kwargs.pop("use_reentrant", False)
        if reentrant or kwargs or every_n_layers != 1 or offload:
            raise ConfigError(
                "LST's side checkpointing takes no options: it checkpoints every side layer, non-reentrantly, "
                f"on the device (got kwargs={activation_checkpointing_kwargs!r}, every_n_layers={every_n_layers}, "
                f"offload={offload})"
            )
        self._set_side_checkpointing(True)

    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict | None = None, **kwargs
    ) -> None:
        """The older name of :meth:`activation_checkpointing_enable` (older transformers, PEFT)."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def activation_checkpointing_disable(self) -> None:
        self._set_side_checkpointing(False)

    gradient_checkpointing_disable = activation_checkpointing_disable

    @property
    def is_activation_checkpointing(self) -> bool:
        return self.ladder_config.side_checkpointing

    is_gradient_checkpointing = is_activation_checkpointing

    def _set_side_checkpointing(self, on: bool) -> None:
        if on and not self.ladder_config.variant.ladders:
            raise ConfigError(
                f"activation checkpointing applies to LST's side layers only, not to method "
                f"{self.ladder_config.method!r}"
            )
        for stack in self.side.stacks.values():
            stack.set_checkpointing(on)
        # recorded in ladder_config.json with the side network, as if it had been configured
        self.ladder_config.side_checkpointing = on
