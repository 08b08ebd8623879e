"""Attack families: one registered record per family declares all the rest of the system needs.

A family (the thesis's feature-visualization attacks, Heo's saliency fooling, input-space
attacks, ...) is a subclass of :class:`AttackFamily` registered with :func:`register_family`.
It declares (ARCHITECTURE.md "Attack families are plugins"):

- ``config``: the pydantic model of one ``attacks[i]`` entry of a sweep spec, with a
  ``name: Literal[...]`` field naming the family's attacks (the spec's discriminated union
  is built from every family's config);
- ``runner``: the job-level runner that trains and evaluates its trials (``"finetuning"``:
  the shared fine-tuning loop with the attacks' loss hooks and the unit-metrics stage);
- ``metrics`` and ``report_columns``: metric names (``shared.metrics`` registry) in the
  order the report shows them;
- :meth:`scopes` (how an entry expands into trials over the sweep's layers),
  :meth:`job_config` (the settings that enter the job and its content key),
  :meth:`alpha_controlled` and :meth:`extra_images_per_step` (cost for ``vizsweep plan``).

The orchestrator and jobs iterate over these records and never name an attack.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from shared.registry import Registry

BASE = "base"  # AttackFamily.starts_from: the sweep's variant itself (base or pruned model)
# AttackFamily.starts_from: a model already in the store, named by reference (resolved when planning by
# orchestrator.store_models): an attacked model of another sweep, or any model by its content key
SWEEP_REF, KEY_REF = "sweep:", "key:"
REF_FORMS = f"{SWEEP_REF}<sweep id>/<run name> or {KEY_REF}<content key>"
# An image count above this is a typo (1e9), not a sweep: ImageNet's train split has 1.28 M images.
MAX_IMAGES = 10_000_000


class AttackConfig(BaseModel):
    """Base of every family's ``attacks[i]`` model: frozen, unknown keys fatal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str  # narrowed to a Literal of the family's attack names by each family


class ConfigProblem(ValueError):
    """A config validator's problem with one field: the spec reader reports it at that field's path."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class AttackFamily:
    """Base class of a family record (see the module docstring); subclasses set the ClassVars."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config: ClassVar[type[AttackConfig]] = AttackConfig
    attacks: ClassVar[tuple[str, ...]] = ()  # registered attack names, in report order (control first)
    runner: ClassVar[str] = "finetuning"  # jobs-level runner (jobs.runners)
    data: ClassVar[str] = ""  # jobs-level data provider the runner prepares the attack's inputs with
    metrics: ClassVar[tuple[str, ...]] = ()  # metric registry names this family's trials produce
    report_columns: ClassVar[tuple[str, ...]] = ()  # metric names shown in the report, in order
    needs_tables: ClassVar[bool] = True  # trials start from the sweep layers' initial activation tables
    step_cost: ClassVar[float] = 1.0  # a training step's cost in plain training steps (`vizsweep plan`)
    trains_model: ClassVar[bool] = (
        True  # trials fine-tune a model (others may start from it); else no training
    )
    starts_from_field: ClassVar[str] = ""  # the config field :meth:`starts_from` reads (spec error paths)

    @classmethod
    def scopes(cls, entry: AttackConfig, layers: Sequence[str]) -> tuple[tuple[str, ...], ...]:
        """The layer scope of each trial an entry makes: by default one trial per sweep layer."""
        return tuple((layer,) for layer in layers)

    @classmethod
    def starts_from(cls, entry: AttackConfig) -> tuple[str, ...]:
        """The models an entry's trials start from: ``BASE`` (the sweep's variant), names of attacks of the
        sweep whose trials' trained models it takes (such dependent trials run after those trials), and/or
        references to models already in the store (:func:`is_store_ref`: one trial each, not per variant)."""
        return (BASE,)

    @classmethod
    def applies(cls, entry: AttackConfig, model: str) -> bool:
        """Whether the entry makes trials on ``model`` (an entry may be meant for one model only)."""
        return True

    @classmethod
    def units(cls, entry: AttackConfig) -> str | tuple[int, ...]:
        """The attacked units of an entry: ``"all"`` or unit indices."""
        return "all"

    @classmethod
    def job_config(cls, entry: AttackConfig) -> dict[str, Any]:
        """The entry's settings that reach the job (and its content key), JSON-able."""
        return entry.model_dump(mode="json", exclude={"name"})

    @classmethod
    def alpha_controlled(cls, entry: AttackConfig) -> bool:
        """Whether the α controller drives this entry's trials (the control rows: no)."""
        from shared.attacks.base import get_attack

        return get_attack(entry.name).fixed_alpha is None

    @classmethod
    def extra_images_per_step(cls, entry: AttackConfig) -> int:
        """Images forwarded per step beside the training batch (``vizsweep plan``'s cost)."""
        return 0

    @classmethod
    def evaluation_images(cls, entry: AttackConfig) -> int:
        """A family without unit tables: images its measurement forwards and backwards (plan's cost)."""
        return 0

    @classmethod
    def spec_problems(cls, entry: AttackConfig, parts: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Problems of an entry against the rest of the spec, as (field, message); ``parts`` holds the
        parsed sections (``models``, ``layers``, ``dataset``; None where a section failed) and
        ``classes``, the dataset's class count when known."""
        return []

    @classmethod
    def model_problems(cls, entry: AttackConfig, model: str) -> list[tuple[str, str]]:
        """Problems of an entry on one registered model it starts from, as (field, message): checked on
        the sweep's models (in :meth:`spec_problems`) and on models of the store it names."""
        return []

    @classmethod
    def report_rows(
        cls, params: Mapping[str, str], metrics: Mapping[str, float]
    ) -> list[dict[str, Any]] | None:
        """This family's report rows from a finished run's params and final metrics; None: the
        standard per-split unit-metrics rows (thesis Table 3.1). Rows carry ``family`` and ``attack``."""
        return None

    @classmethod
    def render_markdown(cls, rows: Sequence[Mapping[str, Any]]) -> str:
        """The family's own table for the rows of :meth:`report_rows` (when it makes its own)."""
        keys = [k for k in rows[0] if k != "family"] if rows else []
        lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]
        return "\n".join(lines) + "\n"

    @classmethod
    def describe(cls, entry: AttackConfig) -> str:
        """A short label of an entry for run names and tables (default: the attack's name)."""
        return entry.name


FAMILIES: Registry[type[AttackFamily]] = Registry("attack family")


def register_family(cls: type[AttackFamily]) -> type[AttackFamily]:
    """Class decorator: register a family record under ``cls.name`` (duplicates raise)."""
    if not (isinstance(cls, type) and issubclass(cls, AttackFamily)) or not cls.name:
        raise TypeError(f"register_family needs an AttackFamily subclass with a name, got {cls!r}")
    if not cls.attacks:
        raise ValueError(f"attack family {cls.name!r} declares no attacks")
    taken = {a: f for f in FAMILIES for a in FAMILIES.get(f).attacks}
    clash = [a for a in cls.attacks if a in taken]
    if clash:
        raise ValueError(f"attack family {cls.name!r}: attacks {clash} belong to family {taken[clash[0]]!r}")
    FAMILIES.register(cls.name)(cls)
    return cls


def families() -> list[type[AttackFamily]]:
    """Every registered family, sorted by name."""
    return [FAMILIES.get(n) for n in FAMILIES]


def family_of(attack: str) -> type[AttackFamily]:
    """The family that declares ``attack``; the error lists every attack of every family."""
    for fam in families():
        if attack in fam.attacks:
            return fam
    valid = ", ".join(a for fam in families() for a in fam.attacks)
    raise KeyError(f"unknown attack {attack!r}; valid attacks: {valid}")


def attack_order(attack: str) -> tuple[int, int]:
    """Report order of an attack: its family (by registration), then its place in the family."""
    ordered = FAMILIES.in_order()  # registration order: the thesis's family first
    for i, fam in enumerate(ordered):
        if attack in fam.attacks:
            return (i, fam.attacks.index(attack))
    return (len(ordered), 0)


def starting_models(
    entry: AttackConfig, attacks: Sequence[AttackConfig], model: str, layers: Sequence[str]
) -> int:
    """Per seed and layer scope of ``entry`` on ``model``: how many models its trials start from (one per
    source: the variant, or each trial of a named attack on that model); trial counts multiply by it."""
    n = 0
    for src in family_of(entry.name).starts_from(entry):
        if is_store_ref(src):
            continue  # once per sweep, not per model: store_trials
        if src == BASE:
            n += 1
            continue
        for a in attacks:
            fam = family_of(a.name)
            if a.name == src and fam.trains_model and fam.applies(a, model):
                n += len(fam.scopes(a, layers))
    return n


def is_store_ref(src: str) -> bool:
    """Whether a :meth:`AttackFamily.starts_from` source names a model in the store (not the sweep's)."""
    return src.startswith((SWEEP_REF, KEY_REF))


def store_sources(entry: AttackConfig) -> tuple[str, ...]:
    """The store models an entry starts from (:func:`is_store_ref`), in its order."""
    return tuple(s for s in family_of(entry.name).starts_from(entry) if is_store_ref(s))


def store_trials(attacks: Sequence[AttackConfig], layers: Sequence[str]) -> int:
    """Per seed: the trials on store models (one per entry, store model and layer scope; no variants)."""
    return sum(len(store_sources(a)) * len(family_of(a.name).scopes(a, layers)) for a in attacks)


def config_models() -> tuple[type[AttackConfig], ...]:
    """Every family's config model: the members of the spec's ``attacks[i]`` union."""
    return tuple(fam.config for fam in FAMILIES.in_order())
