"""Racing a grid over its seeds: which trials each round trains, whom each round eliminates, and when it is decided.

Pure: no Hydra, no MLflow (hydra_plugins/harness_race runs the rounds and records them). The method, as an
appendix would state it:

- **Candidates** are the grid's configurations: a grid point's overrides without its seed. Each belongs to a task
  and an optimizer. The seed list the user typed is the most seeds a candidate may get, in the order typed.
- **Round 1** trains every candidate on the first `first_seeds` seeds. Each later round gives each candidate still
  racing its next `seeds_per_round` seeds. A trial's score is its final validation loss; a failed or diverged
  trial (no finite loss) scores worst: never as anyone's best.
- **Within an optimizer** (per task), the leader is the candidate alive with the fewest non-finite scores, then the
  lowest mean score, over its seeds. A candidate with more non-finite scores than the leader on their shared seeds
  is eliminated (test `failed or diverged`, p 0). Otherwise it is eliminated when a one-sided paired t-test over
  the seeds both ran (where both scored finite), H0: its mean score is not above the leader's, rejects at
  `1 - confidence`. Why this test: with 2 or 3 seeds, the usual first rounds, a bootstrap resamples 2 or 3 values
  and its interval is too narrow, and the Wilcoxon signed-rank test cannot reach p < 0.125; the paired t-test is
  exact under normal seed-to-seed differences, needs only 2 seeds, and pairing by seed cancels what a seed shares
  across configurations (initialisation, data order), as F-Race and irace's t-test variant do. The leader is
  itself chosen on these seeds, so the test favours eliminating (no multiplicity correction, as irace's default
  `t-test`); the benchmark checks the choices against the exhaustive grid's tie set for that reason.
- **Between optimizers** (per task), the winner is the optimizer whose leader has the lowest mean score (fewest
  non-finite first). Against each other optimizer's leader, on the seeds both ran, the race computes the
  probability that the winner's expected score is lower: 1 - p of the same one-sided paired t-test, which is also
  the posterior probability of a lower mean difference under the standard noninformative prior (Student's t
  posterior). An optimizer whose probability reaches `threshold` is settled: out of contention, its leader is its
  choice, and it gets no more seeds (unless a new winner no longer beats it at `threshold`: it races again).
  A task is decided when every optimizer but the winner is settled; with one optimizer, when one candidate is left.
  Why not the seed-win share of harness.report.stats: with 2 seeds it is 1 whenever both are won, whatever the
  spread; the t-test's probability accounts for the spread and the number of seeds.
- **Successive halving** (optional: `hydra.launcher.rungs` of the batched launcher) applies to round 1 only, where
  every candidate trains: a trial stopped at a rung (harness.batched.halving) eliminates its candidate (test
  `pruned at rung r`, no p-value: the ranking at the rung is the decision). Later rounds train few candidates with
  one new seed each; ranking those on a partial curve would replace the paired test with one seed's guess.
- The race ends when every task is decided or no candidate racing has a seed left.
"""

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from scipy.special import stdtr

from harness.errors import ConfigError
from harness.tracking import schema
from harness.tracking.schema import Pruned

FAILED_TEST = "failed or diverged"
T_TEST = "paired t, one-sided"
PRUNED_TEST = "pruned at rung {rung} (step {step})"
ELIMINATED, SETTLED, UNSETTLED = "eliminated", "settled", "racing again"
EVENT_COLUMNS = schema.RACE_EVENT_COLUMNS


@dataclass(frozen=True)
class Settings:
    """hydra.sweeper.* of the race (see the module docstring)."""

    first_seeds: int = 2  # seeds every candidate trains in round 1
    # Seeds each candidate still racing gets in each later round. Two, not one: a round is one launch with a fixed
    # cost, and its few survivors make small batched groups; two per round halve the rounds for about the same
    # trial-steps (BENCHMARKS.md, the racing sweeper).
    seeds_per_round: int = 2
    confidence: float = 0.95  # within an optimizer: eliminate at p < 1 - confidence
    threshold: float = 0.95  # between optimizers: settled when the winner's probability reaches this

    def __post_init__(self):
        for key in ("first_seeds", "seeds_per_round"):
            value = getattr(self, key)
            least = 2 if key == "first_seeds" else 1
            if not isinstance(value, int) or value < least:
                raise ConfigError(f"hydra.sweeper.{key}", value, f"an integer >= {least}")
        for key in ("confidence", "threshold"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not 0.5 <= value < 1:
                raise ConfigError(f"hydra.sweeper.{key}", value, "a number in [0.5, 1)")


@dataclass(frozen=True)
class Candidate:
    """One configuration of the grid: everything but the seed."""

    key: tuple[str, ...]  # its overrides without the seed, in grid order
    task: str
    optimizer: str
    varied: tuple[str, ...] = ()  # those of its overrides that differ between candidates (its label)

    @property
    def label(self) -> str:
        return " ".join(self.varied or self.key)


@dataclass(frozen=True)
class Test:
    """A one-sided paired comparison of `worse` against `better` on the seeds both ran."""

    test: str  # T_TEST or FAILED_TEST
    seeds: int  # seeds compared
    difference: float  # mean of worse - better over the seeds compared (NaN: none)
    p_value: float  # of H0 "worse's mean is not above better's" (NaN: not testable)

    @property
    def probability(self) -> float:
        """That better's expected score is lower (1 - p; NaN when not testable)."""
        return 1.0 - self.p_value


@dataclass(frozen=True)
class Event:
    """One line of the race's record: a candidate eliminated, or an optimizer settled (or racing again)."""

    round: int
    candidate: Candidate
    event: str
    against: Candidate
    test: Test

    def row(self) -> list:
        t = self.test
        return [
            self.round,
            self.candidate.task,
            self.candidate.optimizer,
            self.candidate.label,
            self.event,
            self.against.label,
            t.test,
            t.seeds,
            _json_number(t.difference),
            _json_number(t.p_value),
            _json_number(t.probability),
        ]


@dataclass(frozen=True)
class Choice:
    """A task's outcome: each optimizer's chosen candidate, the winner, and how sure the race is."""

    task: str
    winner: Candidate
    chosen: dict[str, Candidate]  # optimizer -> its leader
    alive: dict[str, int]  # optimizer -> candidates not eliminated
    seeds: dict[str, int]  # optimizer -> seeds its leader ran
    probability: dict[
        str, float
    ]  # other optimizer -> the winner's probability against it (NaN: not testable)
    decided: bool  # False: the seeds ran out first

    def sentence(self) -> str:
        """`linreg_10d: adam (optimizer.lr_scale=1) beats sgd with probability 0.99 (8 seeds)`, or undecided."""
        w = self.winner
        head = f"{self.task}: {w.optimizer} ({self.winner.label})"
        others = [o for o in self.chosen if o != w.optimizer]
        if not others:
            return head + (" chosen" if self.decided else " leads; the seeds ran out before one was left")
        # The runner-up: the optimizer the winner is least sure to beat (not testable counts as least sure).
        runner = min(others, key=lambda o: _or(self.probability[o], -1.0))
        p = self.probability[runner]
        verb = "beats" if self.decided else "leads (seeds ran out)"
        return f"{head} {verb} {runner} with probability {_probability(p)} ({self.seeds[w.optimizer]} seeds)"


class Race:
    """The state of a race: scores so far, who is alive, who is settled. Feed it each round's scores."""

    def __init__(
        self, candidates: Sequence[Candidate], seeds: Sequence[str], settings: Settings = Settings()
    ):
        if not candidates or not seeds:
            raise ValueError("a race needs candidates and seeds")
        self.candidates, self.seeds, self.settings = list(candidates), list(seeds), settings
        self.scores: dict[Candidate, dict[str, float]] = {c: {} for c in self.candidates}
        self.pruned: dict[Candidate, dict[str, Pruned]] = {}  # trials stopped at a rung (no final score)
        self.alive: set[Candidate] = set(self.candidates)
        self.settled: set[tuple[str, str]] = set()  # (task, optimizer)
        self.decided: set[str] = set()  # tasks
        self.round = 0
        self.events: list[Event] = []

    # --- what to train --------------------------------------------------------------------------------------------

    def next_trials(self) -> list[tuple[Candidate, str]]:
        """The next round's (candidate, seed) trials, in grid order; [] when the race is over."""
        per = self.settings.first_seeds if self.round == 0 else self.settings.seeds_per_round
        trials = []
        for c in self.candidates:
            if self._racing(c):
                done = len(self.scores[c])
                trials += [(c, s) for s in self.seeds[done : done + per]]
        return trials

    def _racing(self, c: Candidate) -> bool:
        return c in self.alive and c.task not in self.decided and (c.task, c.optimizer) not in self.settled

    def record(self, results: Iterable[tuple[Candidate, str, "float | Pruned | None"]]) -> list[Event]:
        """Take a round's scores (None or non-finite: failed or diverged; a Pruned: stopped at a rung), then
        eliminate and settle.

        Returns:
            This round's events.
        """
        pruned = []
        for c, seed, value in results:
            if isinstance(value, Pruned):
                self.pruned.setdefault(c, {})[seed] = value
                pruned.append(c)
            else:
                self.scores[c][seed] = _score(value)
        self.round += 1
        start = len(self.events)
        for c in _unique(pruned):
            self._eliminate_pruned(c)
        for task in _unique(c.task for c in self.candidates):
            if task not in self.decided:
                self._task_round(task)
        return self.events[start:]

    def _eliminate_pruned(self, c: Candidate) -> None:
        if c not in self.alive:
            return
        self.alive.discard(c)
        first = min(self.pruned[c].values(), key=lambda p: (p.rung, p.step))
        rest = self._alive(c.task, c.optimizer)
        test = Test(
            PRUNED_TEST.format(rung=first.rung, step=first.step), len(self.pruned[c]), math.nan, math.nan
        )
        self.events.append(Event(self.round, c, ELIMINATED, self._leader(rest) if rest else c, test))

    # --- a round's decisions ----------------------------------------------------------------------------------------

    def _task_round(self, task: str) -> None:
        for optimizer in self._optimizers(task):
            if (task, optimizer) not in self.settled:
                self._eliminate(task, optimizer)
        self._settle(task)
        if self._is_decided(task):
            self.decided.add(task)

    def _eliminate(self, task: str, optimizer: str) -> None:
        alive = self._alive(task, optimizer)
        leader = self._leader(alive)
        for c in alive:
            if c is leader:
                continue
            test = compare(self.scores[leader], self.scores[c])
            if test.p_value < 1 - self.settings.confidence:
                self.alive.discard(c)
                self.events.append(Event(self.round, c, ELIMINATED, leader, test))

    def _settle(self, task: str) -> None:
        winner = self.winner(task)
        for optimizer in self._optimizers(task):
            if optimizer == winner.optimizer:
                self.settled.discard((task, optimizer))
                continue
            other = self.leader(task, optimizer)
            test = compare(self.scores[winner], self.scores[other])
            beaten = test.probability >= self.settings.threshold
            was = (task, optimizer) in self.settled
            if beaten and not was:
                self.settled.add((task, optimizer))
                self.events.append(Event(self.round, other, SETTLED, winner, test))
            elif was and not beaten:
                self.settled.discard((task, optimizer))
                self.events.append(Event(self.round, other, UNSETTLED, winner, test))

    def _is_decided(self, task: str) -> bool:
        optimizers = self._optimizers(task)
        if len(optimizers) == 1:
            return len(self._alive(task, optimizers[0])) == 1
        winner = self.winner(task).optimizer
        return all((task, o) in self.settled for o in optimizers if o != winner)

    # --- reading the state ------------------------------------------------------------------------------------------

    def _optimizers(self, task: str) -> list[str]:
        return _unique(c.optimizer for c in self.candidates if c.task == task)

    def _alive(self, task: str, optimizer: str) -> list[Candidate]:
        return [c for c in self.candidates if c in self.alive and c.task == task and c.optimizer == optimizer]

    def _leader(self, candidates: Sequence[Candidate]) -> Candidate:
        return min(candidates, key=lambda c: _rank(self.scores[c]))

    def leader(self, task: str, optimizer: str) -> Candidate:
        """The optimizer's candidate alive with the fewest failures, then the lowest mean score (first in grid
        order on a tie)."""
        return self._leader(self._alive(task, optimizer))

    def winner(self, task: str) -> Candidate:
        """The leader of the task's optimizer whose leader ranks first."""
        return self._leader([self.leader(task, o) for o in self._optimizers(task)])

    def choices(self) -> list[Choice]:
        """Each task's outcome, in grid order of the tasks."""
        return [self._choice(task) for task in _unique(c.task for c in self.candidates)]

    def _choice(self, task: str) -> Choice:
        winner = self.winner(task)
        optimizers = self._optimizers(task)
        chosen = {o: self.leader(task, o) for o in optimizers}
        probability = {
            o: compare(self.scores[winner], self.scores[c]).probability
            for o, c in chosen.items()
            if o != winner.optimizer
        }
        return Choice(
            task,
            winner,
            chosen,
            {o: len(self._alive(task, o)) for o in optimizers},
            {o: len(self.scores[c]) for o, c in chosen.items()},
            probability,
            task in self.decided,
        )

    def trials_run(self) -> int:
        """Trials trained so far, pruned ones included."""
        return sum(len(s) for s in self.scores.values()) + sum(len(p) for p in self.pruned.values())


# --- the grid as a race sees it -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RaceGrid:
    candidates: list[Candidate]  # in grid order
    seeds: list[str]  # as typed, in the order typed
    jobs: dict[
        tuple[Candidate, str], list[str]
    ]  # (candidate, seed) -> the job's overrides, as the grid has them
    size: int  # grid points: candidates x seeds


def race_grid(grid: Sequence[Sequence[str]], seed_key: str, defaults: dict[str, str]) -> RaceGrid:
    """Split each grid point into its configuration and its seed.

    Args:
        grid: each job's overrides, as the basic sweeper expands them.
        seed_key: the key whose values are the seeds (`seed`).
        defaults: task and optimizer names for points that do not choose them.

    Raises:
        ConfigError: the grid does not sweep `seed_key` over at least 2 values.
    """
    candidates: dict[tuple[str, ...], Candidate] = {}
    jobs: dict[tuple[Candidate, str], list[str]] = {}
    seeds: dict[str, None] = {}
    for overrides in grid:
        seed, rest = _split(overrides, seed_key)
        if seed is None:
            break
        key = tuple(rest)
        if key not in candidates:
            candidates[key] = Candidate(
                key, _value(rest, "task", defaults), _value(rest, "optimizer", defaults)
            )
        seeds[seed] = None
        jobs[(candidates[key], seed)] = list(overrides)
    if len(seeds) < 2:
        typed = ",".join(seeds) or "(not swept)"
        raise ConfigError(
            seed_key,
            typed,
            f"hydra/sweeper=race needs a sweep over at least 2 seeds, e.g. {seed_key}=range(0,8)",
        )
    labelled = _labelled(list(candidates.values()))
    jobs = {(labelled[c.key], seed): overrides for (c, seed), overrides in jobs.items()}
    return RaceGrid(list(labelled.values()), list(seeds), jobs, len(grid))


def _labelled(candidates: list[Candidate]) -> dict[tuple[str, ...], Candidate]:
    """The candidates with their varied overrides: what the grid fixes (task, budget, store) is no label."""
    everywhere = set.intersection(*(set(c.key) for c in candidates))
    return {
        c.key: dataclasses.replace(c, varied=tuple(o for o in c.key if o not in everywhere))
        for c in candidates
    }


def _split(overrides: Sequence[str], seed_key: str) -> tuple[str | None, list[str]]:
    seed, rest = None, []
    for line in overrides:
        key, _, value = line.partition("=")
        if key.lstrip("+~") == seed_key:
            seed = value
        else:
            rest.append(line)
    return seed, rest


def _value(overrides: Sequence[str], group: str, defaults: dict[str, str]) -> str:
    for line in overrides:
        key, _, value = line.partition("=")
        if key.lstrip("+") in (group, f"{group}.name"):
            return value
    return defaults.get(group, "")


# --- the test -----------------------------------------------------------------------------------------------------


def compare(better: dict[str, float], worse: dict[str, float]) -> Test:
    """One-sided paired test that `worse` (seed -> score) scores higher on average than `better`, on their shared
    seeds: by failures when `worse` failed on more of them, else Student's paired t over the seeds where both are
    finite (see the module docstring)."""
    shared = [s for s in better if s in worse]
    fails_better = sum(not math.isfinite(better[s]) for s in shared)
    fails_worse = sum(not math.isfinite(worse[s]) for s in shared)
    if fails_worse > fails_better:
        return Test(FAILED_TEST, len(shared), math.inf, 0.0)
    both = [worse[s] - better[s] for s in shared if math.isfinite(better[s]) and math.isfinite(worse[s])]
    return paired_t(both)


def paired_t(differences: Sequence[float]) -> Test:
    """Student's one-sided paired t-test of H0 "mean difference <= 0"; NaN p with fewer than 2 differences.

    Zero spread: p 0 when every difference is the same positive number, 1 when it is 0 or negative (t = +-inf).
    """
    n = len(differences)
    if n < 2:
        mean = sum(differences) / n if n else math.nan
        return Test(T_TEST, n, mean, math.nan)
    mean = sum(differences) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in differences) / (n - 1))
    if sd == 0 or not math.isfinite(sd):
        return Test(T_TEST, n, mean, 0.0 if mean > 0 else 1.0)
    t = mean / (sd / math.sqrt(n))
    return Test(T_TEST, n, mean, float(stdtr(n - 1, -t)))


def _score(value: float | None) -> float:
    # The tracking port stores inf as the largest float: read back on resume, it is still a failure.
    if value is None or not math.isfinite(value) or abs(value) >= 1.7e308:
        return math.inf
    return float(value)


def _rank(scores: dict[str, float]) -> tuple[int, float]:
    """(failures, mean of the finite scores): lower is better."""
    finite = [v for v in scores.values() if math.isfinite(v)]
    return len(scores) - len(finite), (sum(finite) / len(finite) if finite else math.inf)


def _probability(p: float) -> str:
    return "> 0.9999" if p > 0.9999 else f"{p:.4g}"


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _or(value: float, default: float) -> float:
    return default if math.isnan(value) else value


def _json_number(value: float) -> float | None:
    """NaN and inf have no JSON spelling (MLflow's table reader refuses them): None."""
    return value if math.isfinite(value) else None


__all__ = ["Candidate", "Choice", "Event", "Race", "RaceGrid", "Settings", "compare", "paired_t", "race_grid"]
