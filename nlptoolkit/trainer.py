"""The training loop every task shares.

It owns what is the same for every task: the optimizer and schedule, gradient
clipping, evaluation and early stopping, progress bars, the run folder's
``metrics.jsonl`` / ``summary.json`` / ``best.pt`` / ``last.pt``, exact resume,
and a clean stop on Ctrl-C or SIGTERM. What differs between tasks (batches,
loss, metrics) it asks the :class:`~nlptoolkit.task.Task`.
"""
from __future__ import annotations

import json
import math
import os
import random
import shlex
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn
from tqdm import tqdm

from nlptoolkit.averaging import weight_average
from nlptoolkit.checkpoint import atomic_write_text, save_checkpoint, write_json
from nlptoolkit.errors import NlptkError
from nlptoolkit.precision import PrecisionChoice, choose_precision


class TrainingInterrupted(Exception):
    """Raised after SIGINT/SIGTERM once `last.pt` is safely written."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = 128 + signum


@dataclass
class TrainState:
    """Where training stands; saved in `last.pt` so a run can resume exactly."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_value: Optional[float] = None
    best_step: Optional[int] = None
    bad_evals: int = 0
    train_seconds: float = 0.0
    loss_sum: float = 0.0  # training loss since the last evaluation
    loss_count: int = 0
    grad_norm_sum: float = 0.0  # gradient norms before clipping, since the last evaluation
    grad_norm_max: float = 0.0
    clipped_steps: int = 0  # steps since the last evaluation where clipping fired
    tokens: int = 0
    finished: bool = False


PROGRESS_LINE_SECONDS = 30.0  # how often a log file gets a progress line during an epoch


def stderr_is_terminal() -> bool:
    """Progress-bar redraws suit a terminal only; in a log file they are thousands of junk lines."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _test_signal_at_step() -> Optional[Tuple[int, int]]:
    """Test-only hook: ``NLPTK_TEST_SIGNAL_AT_STEP=N[:INT|TERM]`` makes the trainer send
    itself that signal (default SIGTERM) right after step N, so tests can interrupt a
    run at an exact step through the real signal path. Unset in normal use."""
    text = os.environ.get("NLPTK_TEST_SIGNAL_AT_STEP")
    if not text:
        return None
    step, _, name = text.partition(":")
    return int(step), int(getattr(signal, "SIG" + (name or "TERM").upper()))


def batch_count(batches: Any) -> Optional[int]:
    """How many batches an epoch has, or None for a stream (``data.streaming``), whose length is unknown."""
    try:
        return len(batches)
    except TypeError:
        return None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise NlptkError("device: cuda was asked for but no CUDA GPU is available; use `device: auto` or `device: cpu`")
    return torch.device(name)


def rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def metric_mode(metric: str, mode: str, lower_is_better: frozenset) -> str:
    if mode != "auto":
        return mode
    return "min" if metric in lower_is_better or metric.endswith("loss") else "max"


def fused_adam(kind: type, params: List[torch.nn.Parameter], **options: Any) -> torch.optim.Optimizer:
    """Adam (or AdamW) with its fused kernel where this torch has one for the parameters' device.

    The default implementation makes several passes over every tensor (one
    per term of the update); the fused one makes one. The arithmetic is the
    same (to about 1e-9), but on a CPU the step is about 4x faster, and for a
    small RNN with a large embedding table the optimizer step is a quarter
    of the training step (measured on the sentiment recipe). torch before
    2.4 has no fused CPU kernel: it refuses, and the default is used.
    """
    try:
        return kind(params, fused=True, **options)
    except (RuntimeError, TypeError, ValueError):
        return kind(params, **options)


class Trainer:
    def __init__(
        self,
        task: Any,
        model: nn.Module,
        run_dir: Path,
        quiet: bool = False,
        rank: int = 0,
        world_size: int = 1,
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
        parallel_model: Optional[nn.Module] = None,
        precision: Optional[PrecisionChoice] = None,
    ) -> None:
        self.task = task
        self.recipe = task.recipe
        self.cfg = task.recipe.train
        self.run_dir = Path(run_dir)
        self.quiet = quiet
        self.rank, self.world_size = rank, world_size
        self.is_main = rank == 0
        self.log = log if self.is_main else (lambda s: None)
        self.device = task.device
        self.precision = precision or choose_precision(self.cfg.precision, self.device)
        self.raw_model = model
        self.model = parallel_model or model  # trains through the DDP wrapper when there is one
        self.optimizer = self._build_optimizer()
        # train.ema_decay: evaluation and best.pt use a moving average of the weights (nlptoolkit/averaging.py)
        self.average = weight_average(model, self.cfg.ema_decay) if self.cfg.ema_decay is not None else None
        self.scheduler: Optional[Any] = None
        self.state = TrainState()
        es = self.cfg.early_stopping
        self.metric = es.metric
        self.mode = metric_mode(es.metric, es.mode, task.lower_is_better)
        self._stop_signal: Optional[int] = None
        # A terminal gets a progress bar; a log file (stderr redirected) gets plain lines instead:
        # one per evaluation, and one every PROGRESS_LINE_SECONDS in between. --quiet: evaluations only.
        terminal = stderr_is_terminal()
        self.show_bar = self.is_main and not quiet and terminal
        self.progress_lines = self.is_main and not quiet and not terminal
        if self.show_bar:  # print above the bar, which is then redrawn, instead of into it
            write = self.log

            def log_above_bar(text: str) -> None:
                with tqdm.external_write_mode(file=sys.stderr):
                    write(text)

            self.log = log_above_bar
        self.tensorboard: Optional[Any] = None
        if self.cfg.tensorboard and self.is_main:  # fail before training, not at the first evaluation
            from nlptoolkit.tensorboard_log import open_writer

            self.tensorboard = open_writer(self.run_dir)

    # -- setup ----------------------------------------------------------------
    def _build_optimizer(self) -> torch.optim.Optimizer:
        cfg, params = self.cfg, [p for p in self.model.parameters() if p.requires_grad]
        if cfg.optimizer in ("adam", "adamw"):
            return fused_adam(torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW, params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)

    def _build_scheduler(self, total_steps: int) -> Optional[Any]:
        cfg = self.cfg
        if cfg.scheduler == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(self.optimizer, mode=self.mode, factor=0.5, patience=0)
        warmup = cfg.warmup_steps
        if cfg.scheduler == "none" and warmup == 0:
            return None

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            if cfg.scheduler == "cosine":
                # the decay ends where training ends: at the step horizon, or at max_minutes
                # when the clock runs out first (a slower machine takes fewer steps, same curve)
                progress = max((step - warmup) / max(1, total_steps - warmup), self._time_progress)
                return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
            return 1.0

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)

    # -- checkpoints ------------------------------------------------------------
    @property
    def evaluated_model(self) -> nn.Module:
        """The model that is evaluated and saved as best.pt: the weights' moving average, or the weights."""
        return self.average.module if self.average is not None else self.raw_model

    def _payload(self, full: bool) -> Dict[str, Any]:
        """best.pt (``full`` False) holds the evaluated model; last.pt also what resuming needs."""
        payload = {
            "task": self.task.name,
            "recipe": self.recipe.to_dict(),
            "task_state": self.task.state_dict(),
            "model": self.evaluated_model.state_dict(),
            "train_state": asdict(self.state),
        }
        if full:
            payload.update(
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict() if self.scheduler is not None else None,
                rng=rng_state(),
                training_state=self.task.training_state(),
            )
            if self.average is not None:  # the average is in "model"; training continues from the weights
                payload.update(trained_model=self.raw_model.state_dict(), ema_updates=int(self.average.n_averaged))
        return payload

    _saved_step: Optional[int] = None  # the step last.pt holds

    def save_last(self) -> None:
        if self.is_main:
            save_checkpoint(self.run_dir / "last.pt", self._payload(full=True))
        self._saved_step = self.state.step

    def restore(self, payload: Dict[str, Any]) -> None:
        """Continue exactly where `last.pt` left off."""
        if self.average is not None:
            if "trained_model" not in payload:
                raise NlptkError("train.ema_decay: the run being resumed did not average its weights; resume without it, or start a new run")
            self.raw_model.load_state_dict(payload["trained_model"])
            self.average.module.load_state_dict(payload["model"])
            self.average.n_averaged.fill_(int(payload["ema_updates"]))
        elif "trained_model" in payload:
            raise NlptkError("train.ema_decay: the run being resumed averaged its weights; resume with the same ema_decay")
        else:
            self.raw_model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = TrainState(**payload["train_state"])
        self._pending_scheduler = payload.get("scheduler")
        self.task.load_training_state(payload.get("training_state") or {})
        set_rng_state(payload["rng"])
        self._saved_step = self.state.step
        if self.is_main:
            self._trim_metrics()

    def _trim_metrics(self) -> None:
        """Keep only the metrics.jsonl lines that last.pt knows about.

        A hard kill between appending an evaluation and saving last.pt (or in the
        middle of a line) would otherwise leave a torn or duplicate line once the
        resumed run evaluates that step again.
        """
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= self.state.step:
                kept.append(line + "\n")
        text = "".join(kept)
        if text != path.read_text(encoding="utf-8", errors="replace"):
            atomic_write_text(path, text)

    # -- signals ------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: Any) -> None:
        if self._stop_signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum
        self.log(f"\nreceived {signal.Signals(signum).name}: saving last.pt at the end of this step (press again to abort)")

    # -- the loop ------------------------------------------------------------------
    def fit(self, train: Any, validation: Any) -> Dict[str, Any]:
        cfg = self.cfg
        steps_per_epoch = batch_count(self.task.batches(train, train=True, epoch=0, rank=self.rank, world_size=self.world_size))
        if steps_per_epoch == 0:
            raise NlptkError(f"train.batch_size: {cfg.batch_size} leaves no training batch for {self.world_size} process(es); lower it or add data")
        if steps_per_epoch is None and cfg.scheduler == "cosine" and cfg.max_steps is None and cfg.max_minutes is None:
            raise NlptkError(
                "train.scheduler: cosine decays to 0 where training ends, and the length of a streamed corpus "
                "(data.streaming: true) is not known ahead; set train.max_steps or train.max_minutes"
            )
        self.steps_per_epoch = steps_per_epoch
        # training ends at whichever comes first, max_steps or the last epoch: so does the schedule
        total_steps = min(cfg.max_steps or math.inf, steps_per_epoch * cfg.epochs if steps_per_epoch is not None else math.inf)
        resumed_lrs = [group["lr"] for group in self.optimizer.param_groups]
        self.scheduler = self._build_scheduler(total_steps)
        if getattr(self, "_pending_scheduler", None) and self.scheduler is not None:
            self.scheduler.load_state_dict(self._pending_scheduler)
            # building a LambdaLR steps it once (lr = base * factor(0)); put back the lr the
            # interrupted run was using, or the first resumed step trains with the wrong one
            for group, lr in zip(self.optimizer.param_groups, resumed_lrs):
                group["lr"] = lr
        if self._plateau_warmup and self.state.step < cfg.warmup_steps:
            self._set_warmup_lr(self.state.step)

        choice = self.precision
        if choice.requested != "fp32":  # auto or bf16: say what was picked and why (summary.json has it too)
            self.log(f"precision: {choice.used} (train.precision: {choice.requested}; {choice.reason})")
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        in_main_thread = _in_main_thread()
        if in_main_thread:
            for s in previous:
                signal.signal(s, self._on_signal)
        try:
            return self._loop(train, validation, total_steps)
        finally:
            if self.tensorboard is not None:
                self.tensorboard.close()
            if in_main_thread:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    def _loop(self, train: Any, validation: Any, total_steps: int) -> Dict[str, Any]:
        cfg, state, task = self.cfg, self.state, self.task
        stopped = "completed"
        signal_at = _test_signal_at_step()
        start = self._start = time.perf_counter() - state.train_seconds
        self.model.train()
        while state.epoch < cfg.epochs and not state.finished:
            batches = task.batches(train, train=True, epoch=state.epoch, rank=self.rank, world_size=self.world_size)
            if state.batch_in_epoch == 0:
                task.on_epoch_start(state.epoch)
            self.padding = batches.padding_fraction()
            self.epoch_batches = batches
            count = batch_count(batches)
            bar = tqdm(
                total=count, initial=state.batch_in_epoch, desc=f"epoch {state.epoch + 1}/{cfg.epochs}",
                disable=not self.show_bar, leave=False, dynamic_ncols=True, file=sys.stderr,
            )
            tick, tick_tokens = time.perf_counter(), 0
            line_at, line_tokens, line_loss = tick, 0, (0.0, 0)  # for the plain progress lines
            for batch in batches.from_position(state.batch_in_epoch):
                if self._agreed_signal is not None:
                    self._interrupt(start)
                loss_value = self._step(batch)
                tokens = task.count_tokens(batch) * self.world_size
                state.tokens += tokens
                tick_tokens += tokens
                state.step += 1
                state.batch_in_epoch += 1
                if signal_at is not None and state.step == signal_at[0]:
                    os.kill(os.getpid(), signal_at[1])
                bar.update(1)
                if state.step % 10 == 0:
                    now = time.perf_counter()
                    bar.set_postfix(
                        loss=f"{loss_value:.3f}", tok_s=f"{tick_tokens / max(now - tick, 1e-9):,.0f}",
                        gnorm=f"{state.grad_norm_sum / max(state.loss_count, 1):.2f}",
                        clipped=f"{state.clipped_steps / max(state.loss_count, 1):.0%}",
                    )
                    tick, tick_tokens = now, 0
                if self.progress_lines:
                    line_tokens += tokens
                    line_loss = (line_loss[0] + loss_value, line_loss[1] + 1)
                    now = time.perf_counter()
                    if now - line_at >= PROGRESS_LINE_SECONDS:
                        self.log(
                            f"step {state.step} epoch {state.epoch + 1}/{cfg.epochs} batch {state.batch_in_epoch}{f'/{count}' if count is not None else ''}: "
                            f"train_loss={line_loss[0] / line_loss[1]:.4f} tokens/s={line_tokens / max(now - line_at, 1e-9):,.0f} "
                            f"grad_norm={state.grad_norm_sum / max(state.loss_count, 1):.3f} clipped={state.clipped_steps / max(state.loss_count, 1):.0%}"
                        )
                        line_at, line_tokens, line_loss = now, 0, (0.0, 0)
                reason = self._stop_reason(start)
                if cfg.eval_every and state.step % cfg.eval_every == 0 and not reason:
                    if self._evaluate(validation, start):
                        reason = "early_stopping"
                if reason:
                    stopped = reason
                    state.finished = True
                    break
            bar.close()
            if not state.finished and state.batch_in_epoch == 0:  # only a stream can turn out empty here
                raise NlptkError(f"the training data gave no batch in epoch {state.epoch + 1} (train.batch_size: {cfg.batch_size}); check the data source")
            if not state.finished:
                state.epoch += 1
                state.batch_in_epoch = 0
                # evaluate at the epoch's end, unless eval_every just did so at this very step
                if (not cfg.eval_every or state.epoch == cfg.epochs) and self.last_eval_step != state.step:
                    if self._evaluate(validation, start):
                        stopped, state.finished = "early_stopping", True
        state.finished = True
        # every process takes this branch alike (the evaluation broadcasts): decide on shared
        # state only; loss_count, say, is reset by rank 0's evaluation alone
        if self.last_eval_step != state.step:
            self._evaluate(validation, start)
        state.train_seconds = time.perf_counter() - start
        self.save_last()
        return self._summary(stopped)

    last_eval_step: Optional[int] = None
    last_metrics: Dict[str, float] = {}
    padding: float = 0.0
    epoch_batches: Any = None

    def _padding(self) -> float:
        """The epoch's padding fraction: known ahead for in-memory batches, measured so far for streamed ones."""
        if getattr(self.epoch_batches, "streamed", False):
            return self.epoch_batches.padding_fraction()
        return self.padding

    def _step(self, batch: Dict[str, Any]) -> float:
        cfg, state = self.cfg, self.state
        batch = self.task.to_device(batch)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision.used == "bf16"):
            loss = self.task.training_step(self.model, batch)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise self._not_finite(f"training loss became {value}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # the norm (clipped or not) also catches inf/nan gradients before they reach the weights
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip or math.inf)
        norm = float(norm)  # before clipping
        if not math.isfinite(norm):
            raise self._not_finite(f"the gradient norm became {norm}")
        state.grad_norm_sum += norm
        state.grad_norm_max = max(state.grad_norm_max, norm)
        state.clipped_steps += bool(cfg.grad_clip) and norm > cfg.grad_clip
        self.optimizer.step()
        if self.average is not None:
            self.average.update_parameters(self.raw_model)
        if self._plateau_warmup and state.step + 1 <= cfg.warmup_steps:
            self._set_warmup_lr(state.step + 1)
        if self.scheduler is not None and not isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self._time_progress = self._elapsed_fraction()
            self.scheduler.step()
        state.loss_sum += value
        state.loss_count += 1
        return value

    _time_progress = 0.0  # the fraction of max_minutes used, as the cosine schedule last saw it
    _start: Optional[float] = None  # perf_counter() at the start of training, less the time of a resumed run

    def _elapsed_fraction(self) -> float:
        """Fraction of ``max_minutes`` used so far (0 without it), rank 0's clock on every process.

        Every process must train with the same learning rate, so with several
        processes rank 0's reading is broadcast (8 bytes a step).
        """
        if self.cfg.max_minutes is None or self._start is None:
            return 0.0
        fraction = (time.perf_counter() - self._start) / max(self.cfg.max_minutes * 60, 1e-9)
        if self.world_size > 1:
            shared = torch.tensor([fraction], dtype=torch.float64, device=self.device)
            torch.distributed.broadcast(shared, src=0)
            fraction = float(shared[0])
        return fraction

    @property
    def _plateau_warmup(self) -> bool:
        return self.cfg.scheduler == "plateau" and self.cfg.warmup_steps > 0

    def _set_warmup_lr(self, step: int) -> None:
        """With ``scheduler: plateau``, the warm-up the other schedules get from their factor:
        the learning rate for (0-based) ``step`` is lr * (step + 1) / warmup_steps, then lr."""
        lr = self.cfg.lr * min(1.0, (step + 1) / self.cfg.warmup_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def _not_finite(self, what: str) -> NlptkError:
        """Stop before a bad update; last.pt (if any) still holds the last good state."""
        cfg, state = self.cfg, self.state
        last = self.run_dir / "last.pt"
        kept = (
            f"the last good checkpoint {last} (step {self._saved_step}) is kept"
            if self._saved_step is not None else "no checkpoint was written yet"
        )
        return NlptkError(
            f"{what} at step {state.step + 1} (epoch {state.epoch + 1}); training stopped; "
            f"lower train.lr (now {cfg.lr}) or set a smaller train.grad_clip (now {cfg.grad_clip}); {kept}"
        )

    _agreed_signal: Optional[int] = None  # a SIGINT/SIGTERM that every process has agreed to stop on

    def _stop_reason(self, start: float) -> Optional[str]:
        """After each step: has a limit been reached, or a signal come in?

        With several processes they must all agree, or one would wait in a
        collective (the next step's gradients, an evaluation's broadcast) that the
        others never join: the clock (max_minutes) and signals differ between
        processes, so their readings are combined (8 bytes a step).
        """
        cfg, state = self.cfg, self.state
        minutes_up = cfg.max_minutes is not None and time.perf_counter() - start >= cfg.max_minutes * 60
        signum = self._stop_signal or 0
        if self.world_size > 1:
            flags = torch.tensor([float(minutes_up), float(signum)], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
            minutes_up, signum = bool(flags[0]), int(flags[1])
        self._agreed_signal = signum or None  # acted on before the next step
        if cfg.max_steps and state.step >= cfg.max_steps:
            return "max_steps"
        return "max_minutes" if minutes_up else None

    def _interrupt(self, start: float) -> None:
        signum = self._agreed_signal
        self.state.train_seconds = time.perf_counter() - start
        self.save_last()
        raise TrainingInterrupted(
            signum,
            f"interrupted at step {self.state.step}; saved {self.run_dir / 'last.pt'}. "
            f"Resume with: {resume_command(self.run_dir, self.world_size)}",
        )

    def _evaluate(self, validation: Any, start: float) -> bool:
        """Evaluate, log, checkpoint; return True when early stopping says stop."""
        self.last_eval_step = self.state.step
        value, stop = self._evaluate_main(validation, start) if self.is_main else (0.0, False)
        if self.world_size > 1:  # every process must agree on the schedule and on stopping
            shared = torch.tensor([value, float(stop)], dtype=torch.float64, device=self.device)
            torch.distributed.broadcast(shared, src=0)
            value, stop = float(shared[0]), bool(shared[1])
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and self.state.step >= self.cfg.warmup_steps:
            self.scheduler.step(value)  # plateau reductions start once the warm-up is over
        self.save_last()
        return stop

    def _evaluate_main(self, validation: Any, start: float) -> Tuple[float, bool]:
        """Rank 0's part: metrics, metrics.jsonl, best.pt and last.pt."""
        state, task = self.state, self.task
        evaluated = self.evaluated_model
        evaluated.eval()
        with torch.no_grad():
            metrics = task.evaluate(evaluated, validation)
        self.raw_model.train()  # the moving average, when there is one, stays in eval mode
        if self.metric not in metrics:
            raise NlptkError(
                f"train.early_stopping.metric: '{self.metric}' is not a metric of task '{task.name}' "
                f"(it reports {', '.join(metrics)}); set it to one of those"
            )
        elapsed = time.perf_counter() - start
        train_loss = state.loss_sum / state.loss_count if state.loss_count else None
        steps = state.loss_count
        record = {
            "epoch": round(state.epoch + state.batch_in_epoch / self.steps_per_epoch, 4) if self.steps_per_epoch else state.epoch,
            "step": state.step,
            "train_loss": train_loss,
            "lr": self.optimizer.param_groups[0]["lr"],
            "grad_norm": state.grad_norm_sum / steps if steps else None,  # mean before clipping
            "grad_norm_max": state.grad_norm_max if steps else None,
            "clipped_fraction": state.clipped_steps / steps if steps else None,  # steps where clipping fired
            "padding_fraction": round(self._padding(), 6),
            "tokens_per_second": state.tokens / elapsed if elapsed > 0 else None,
            "elapsed_seconds": round(elapsed, 3),
            "validation": metrics,
        }
        state.loss_sum, state.loss_count = 0.0, 0
        state.grad_norm_sum, state.grad_norm_max, state.clipped_steps = 0.0, 0.0, 0
        self.last_metrics = metrics
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.tensorboard is not None:
            from nlptoolkit.tensorboard_log import log_record

            log_record(self.tensorboard, record)

        value = metrics[self.metric]
        better = state.best_value is None or (value < state.best_value if self.mode == "min" else value > state.best_value)
        if better:
            state.best_value, state.best_step, state.bad_evals = value, state.step, 0
            save_checkpoint(self.run_dir / "best.pt", {**self._payload(full=False), "metrics": metrics})
        else:
            state.bad_evals += 1
        # the log line shows the task's headline metrics; metrics.jsonl keeps every key
        # (a tagger's per-entity-type scores, for instance)
        shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k in task.metrics)
        loss_text = f"train_loss={train_loss:.4f} " if train_loss is not None else ""
        self.log(f"step {state.step} epoch {state.epoch}: {loss_text}validation {shown}{' *' if better else ''}")
        task.after_evaluate(evaluated, self.log)
        patience = self.cfg.early_stopping.patience
        return value, bool(patience and state.bad_evals >= patience)

    def _summary(self, stopped: str) -> Dict[str, Any]:
        state = self.state
        summary = {
            "task": self.task.name,
            "stopped": stopped,
            "steps": state.step,
            "epochs": state.epoch,
            "processes": self.world_size,
            "train_seconds": round(state.train_seconds, 2),
            "tokens_per_second": round(state.tokens / state.train_seconds, 1) if state.train_seconds else None,
            "padding_fraction": round(self._padding(), 6),
            "precision": self.precision.to_dict(),
            "best": {"metric": self.metric, "value": state.best_value, "step": state.best_step},
            "final": self.last_metrics,
        }
        if self.is_main:
            best_metrics = self._best_metrics()
            if best_metrics:
                summary["best"]["metrics"] = best_metrics
            write_json(self.run_dir / "summary.json", summary)
        return summary

    def _best_metrics(self) -> Optional[Dict[str, float]]:
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return None
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            if record["step"] == self.state.best_step:
                return record["validation"]
        return None


def resume_command(run_dir: Path, processes: int = 1) -> str:
    """The command that continues an interrupted run: the run folder holds the resolved recipe."""
    nproc = f" --nproc {processes}" if processes > 1 else ""
    return f"nlptk run --resume {shlex.quote(str(run_dir))}{nproc}"


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
