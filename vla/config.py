"""Typed configs of the transformer policy. Parsed at the entry point only, validated here,
dumped as JSON beside every checkpoint."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields

COMMAND_MODALITIES = ("ipa", "text", "none", "audio", "heard")
SPOKEN_MODALITIES = ("audio", "heard")
"""Modalities that synthesize the utterance and hear it (a voice and noise drawn per rendition)."""
EXECUTION_MODES = ("ensemble", "first", "open_loop")
ACTION_SPACES = ("control", "plan")
"""What the action tokens are (``PolicyConfig.action``)."""
DEFAULT_ENSEMBLE_DECAY = {"control": 0.5, "plan": 0.2}
"""``PolicyConfig.ensemble_decay`` when not given, per action space."""
DEFAULT_REPLAN_EVERY = {"control": 1, "plan": 5}
"""``PolicyConfig.replan_every`` when not given, per action space."""
OBSERVATION_CHOICES = ("ego_frame", "lane_frame", "lane_route", "lane_gaps")
"""How ego and actor tokens are featurized (``vla.inputs.OBSERVATIONS``)."""
LEGACY_OBSERVATION = "ego_frame"
"""What a saved config without an ``observation`` field was trained on (one without
``replan_every`` re-planned every step)."""
ACTION_HEADS = ("bins", "diffusion")
"""Action heads of the policy (their implementations: ``vla.heads.POLICY_HEADS``)."""
DIFFUSION_SCHEDULERS = ("ddim", "dpmsolver")
"""Inference samplers of the diffusion head (``vla.diffusion_head.INFERENCE_SCHEDULERS``)."""
SWITCHES = {
    "yield_paths": "0 (straight lines) or 1 (lane paths)",
    "commit_inside": "0 (off) or 1 (on)",
    "tracker_anticipate": "0 (off) or 1 (on)",
    "commit_lateral": "0 (whole plan) or 1 (lateral path only)",
    "road_edge": "0 (off) or 1 (on)",
}
"""``PolicyConfig`` fields that are 0 / 1 switches (floats, like the other execution settings),
and what each value means."""


@dataclass(frozen=True)
class PolicyConfig:
    d_model: int = 128
    """Width of every token embedding and of the transformer."""
    n_layers: int = 4
    """Decoder blocks."""
    n_heads: int = 4
    """Attention heads (d_model must be divisible by it)."""
    mlp_ratio: float = 3.0
    """Hidden width of each block's MLP as a multiple of d_model."""
    action: str = "control"
    """What the policy predicts: 'control' = a chunk of ``horizon`` raw [accel, steer] actions at
    10 Hz; 'plan' = ``horizon`` waypoints of the ego's own future, ``sim.plan.PLAN_DT`` apart
    (default 4 = 2 s), which ``sim.plan.PlanTracker`` turns into accel / steer every step."""
    horizon: int = 4
    """Steps per predicted chunk: 10 Hz actions ('control') or waypoints ('plan')."""
    n_bins: int = 64
    """Bins per action dimension; a residual inside the bin is regressed on top."""
    residual_weight: float = 1.0
    """Weight of the in-bin residual loss against the bin cross-entropy."""
    observation: str = "ego_frame"
    """Features of the ego and actor tokens (``vla.inputs.OBSERVATIONS``): 'ego_frame' = actors as
    offsets in the ego's body frame; 'lane_frame' = actors along / across the ego's lane with
    inverse gap and closing rate; 'lane_route' = 'lane_frame' + where the route goes (the
    distance to the next junction, the route's point 2 s ahead at the current speed; needs episodes recorded with
    ``sim.route``'s table); 'lane_gaps' = 'lane_frame' + whether a lane change to either side is
    safe now by MOBIL's criterion (``vla.inputs.GAP_FIELDS``)."""
    forecast_weight: float = 0.0
    """Weight of an auxiliary loss (PlanT's) that predicts from each actor token where that car
    will be in 1 and 2 s (``vla.inputs.actor_forecasts``); 0 = no forecasting head."""
    cameras: bool = True
    """Read the 6-camera surround rig; False = state tokens only (a faster, blind policy)."""
    camera_width: int = 96
    """Camera image width in pixels (the rig's)."""
    camera_height: int = 64
    """Camera image height in pixels (the rig's)."""
    camera_patch: int = 32
    """Square patch size of the camera tokenizer; must divide width and height."""
    command: str = "ipa"
    """How the passenger's command is heard: 'ipa' phonemes of the spoken phrasing, 'text' bytes
    of it, 'audio' (the synthesized, noisy utterance as codec tokens + VAD events:
    ``tokenizers_mm.audio_command``), 'heard' (the same utterance, and the IPA phones the ear
    ``audio_ear`` recognizes in it: ``tokenizers_mm.ear``) or 'none' (an unconditioned policy)."""
    max_command_tokens: int = 64
    """Command positions kept (longer commands are cut): tokens for ipa / text, groups of
    ``audio_group`` codec frames or VAD events for audio."""
    audio_codec: str = ""
    """command 'audio': the codec checkpoint directory (``vla train-codec``); a saved policy keeps
    its own copy and records it as 'codec' (relative to the policy directory)."""
    audio_ear: str = ""
    """command 'heard': the ear directory (``vla train-ear``); a saved policy keeps its own copy
    and records it as 'ear' (relative to the policy directory)."""
    audio_n_q: int = 2
    """command 'audio': codebook levels of each codec frame the policy reads."""
    audio_group: int = 4
    """command 'audio': consecutive 75 Hz codec frames summed into one position (4 = 18.75 Hz)."""
    audio_codebook_size: int = 0
    """command 'audio': entries per codebook (set from the codec when the policy is built)."""
    command_bag: int = 0
    """Hash buckets of the command bag (0 = off): the command's ids (IPA phones or text bytes,
    with a boundary before and after) are read as a bag of their 1-, 2- and 3-grams, each hashed
    to one of this many learned vectors, averaged into ONE command token that replaces the id
    sequence (``vla.model.command_ngrams``). Why: the policy's command path read as a sequence
    names held-out phrasings of a command right a third of the time, even from a perfect
    transcript, where a linear classifier over the same n-grams of the same training words names
    21 of 27. With ``command_bag_dropout`` 0.3 the head names 12 of 15 held-out highway phrasings
    (from 9), but on dev the car did not follow held-out words more often, so it is opt-in
    (docs/audio_policy.md, "A bag of n-grams"). Only with command 'ipa', 'text' or 'heard'."""
    command_bag_dropout: float = 0.0
    """Training only: each n-gram of the command bag is left out of the mean with this probability
    (at least one is kept), the word dropout of deep averaging networks (Iyyer et al. 2015), so
    that no single n-gram decides a command."""
    command_label_weight: float = 0.0
    """Weight of an auxiliary loss: from the hidden state at ``<action>`` (what actions are
    decoded from) a linear head names which of the 9 command labels (``tokenizers_mm.corpus``)
    the sample heard; 0 = none. Direct supervision of understanding, for audio commands."""
    command_thought: bool = False
    """Predict, then act: with the command-label head, the label it names at ``<action>`` is fed
    back as one more token (a learned vector per label) before the action tokens, so every plan
    is decoded after the policy has said what it understood, and still reads the words. Trained
    teacher-forced on the sample's true label (``command_thought_noise`` of them replaced by a
    random label, so that the words can overrule a wrong reading); at test the head's argmax.
    Unlike ``command_readback`` the words stay in the sequence. Needs ``command_label_weight`` > 0
    and the bins head; an architecture setting (saved with the checkpoint). Off by default: on 3
    seeds x 50 held-out medium-highway episodes with held-out words it gained +0.023 [-0.033,
    +0.080] in goal success (IPA +0.020, heard +0.027), an interval across 0, with more lateral jerk
    for the IPA policies (docs/audio_policy.md, "Predict, then act")."""
    command_thought_noise: float = 0.2
    """Training only, with ``command_thought``: the chance that a sample's thought token is a label
    drawn uniformly from the 9 instead of its own (the action targets stay its own)."""
    execution: str = "ensemble"
    """select_action: 'ensemble' = re-plan every step and average the overlapping chunk
    predictions with exponential weights (ACT's temporal ensembling); 'first' = re-plan every
    step and execute the first action; 'open_loop' = execute whole chunks. A 'plan' policy
    re-plans every step under 'ensemble' (blending each new plan with the recent ones at equal
    absolute times, ``sim.plan.blend_plans``) and 'first' (the new plan alone), and tracks each
    plan for its first ``sim.plan.PLAN_DT`` seconds under 'open_loop' (the tracker still closes
    the loop on the ego's motion every step)."""
    replan_every: int | None = None
    """Under 'ensemble' / 'first': predict a new chunk or plan every this many steps only, and
    execute (ensembled) older predictions in between. None = the action space's default
    (``DEFAULT_REPLAN_EVERY``, read through ``replan_period``, so it follows the action space
    even when a config is copied with another one): every step for control chunks; every 5 steps (2 Hz, the
    spacing of a plan's waypoints) for plans, whose tracker still closes the loop at 10 Hz: on
    validation seeds this drove like re-planning every step and cut the policy's share of a
    closed-loop step below a fifth (``vla bench policy``)."""
    ensemble_decay: float | None = None
    """Temporal ensembling weight exp(-decay * age) of a chunk's prediction made `age` steps ago.
    None = the action space's default (``DEFAULT_ENSEMBLE_DECAY``, read through ``decay``): 0.5 for control chunks (4
    overlapping predictions), 0.2 for plans (up to 20 overlap; on validation seeds 0.1-0.2
    halved a plan policy's lateral jerk against 0.5, at the same goal success)."""
    commit_margin: float = 1.5
    """A plan policy: at a re-plan, keep following the plan it is executing (continued from now)
    unless the model scores the new plan more likely by more than this many nats (teacher-forced
    probability of landing within 2 bins of each plan token, ``vla.commitment.Commitment.scores``); 0 =
    always take the new plan. Hysteresis for a model that hesitates between two decisions (change
    lane or not); a new plan that slows down is always taken (``vla.commitment.COMMIT_BRAKE_M``), and
    only on open road (no junction within 50 m along the route: at the junction holding decisions
    collided more). With ``tracker_lookahead`` 1.0 it met the lateral-jerk target on 3 seeds x 50
    held-out highway episodes (docs/drive_like_expert.md). Plan policies only (control-chunk
    policies ignore it). An execution setting: checkpoints from before it existed get this default."""
    commit_lateral: float = 0.0
    """With ``commit_margin`` > 0: 1 = commitment holds only the plan's lateral path; the speed
    profile always comes from the newest plan (a kept plan is the executed plan's lateral offsets
    with the new plan's speed gains, so the two are compared on their lateral decision only);
    0 = it holds the whole plan, and a new plan that slows down is always taken (the default).
    Why it exists: with the whole plan held, slowing down is always taken and speeding up only
    when the model is sure of it, which may hold a car below the speed it was told to keep
    ("Why slow down is missed" in docs/drive_like_expert.md). A switch, 0 or 1; an execution
    setting."""
    tracker_jerk_long: float = 1.5
    """A plan policy's tracker (``sim.plan.TrackerParams.max_jerk_long``): comfort limit on the
    change of its acceleration command, m/s^3; 0 = none. Braking is never delayed (a limit that
    delayed it cost goal success and off-road); throttle and brake release are smoothed. 2 m/s^3
    halved longitudinal jerk on 3 seeds x 50 held-out highway episodes and lifted comfort above
    0.95 at no safety cost; 1.5 (the default since 2026-12-04, with commitment and the 1.0 s
    look-ahead) brought longitudinal jerk p95 within 1.5x the expert's, again at no measured
    cost in collisions, off-road, progress or goal success (docs/drive_like_expert.md). An
    execution setting, not learned: a saved policy drives with whatever its config says
    (checkpoints saved with 2.0 keep it; ``vla eval --tracker-jerk 1.5 0`` drives them at 1.5)."""
    tracker_anticipate: float = 0.0
    """A plan policy's tracker (``sim.plan.TrackerParams.anticipate``): 1 = let go of a brake (or
    the throttle) early enough that the release at ``tracker_jerk_long`` ends at the plan's speed;
    0 = release when the plan's next 0.5 s ask it (the default), which under the jerk limit sheds
    up to 2-3 m/s past the plan's speed after a firm brake. A switch, 0 or 1; an execution setting."""
    road_edge: float = 1.0
    """A plan policy on open road: 1 = the plan's lateral offsets stay between the centres of the
    outermost same-direction lanes the backend reports (``obs["lanes"]``), so no plan leads off
    the road, e.g. a misheard lane change from the outermost lane; 0 = off. Where a backend
    reports no lanes (NaN, or no ``lanes`` at all) the plan is left alone. On 1050 held-out highway
    episodes (BC, DAgger and heard policies) it took off-road exits from 16 to 0, goal success
    +0.011 [+0.004, +0.020] (docs/drive_like_expert.md, "The road edge"); the default since
    2026-12-07, also for checkpoints saved before it existed. A switch, 0 or 1; an execution setting."""
    tracker_lookahead: float = 1.0
    """A plan policy's tracker (``TrackerParams.lookahead_time``): pure pursuit aims at the plan's
    point this many seconds of speed ahead (at least 3 m). A new plan a few centimetres beside
    the last moves the wheel as offset / distance^2, so farther is smoother; alone, 1.0 s (against
    0.6 s) halved lateral jerk but completed half as many lane changes; with ``commit_margin``
    the lane changes come back (docs/drive_like_expert.md). An execution setting: checkpoints
    from before it existed get this default (0.6 reproduces them)."""
    tracker_jerk_lat: float = 0.0
    """A plan policy's tracker (``TrackerParams.max_jerk_lat``): comfort limit on the change of
    lateral acceleration through the wheel, m/s^3; 0 = none (the default: on 3 seeds x 50
    held-out highway episodes 2 m/s^3 met the lateral-jerk target but made 7-11% leave the road,
    the limit being a lag inside pure pursuit, and the junction's turns lost half their goal
    success on validation seeds)."""
    yield_zone: float = 30.0
    """A plan policy: metres before a junction's entry within which the yield check
    (``sim.yield_check``) holds the car at the line while an observed actor crossing our way
    would meet our route within 1 s of us; 0 = off. A rule beside the network, read from the
    observation only (actors, ``obs["route"]``, ``obs["route_path"]``), so every backend gets it.
    With ``route_steer_speed`` 4 it cut collisions at the held-out junction from 0.23-0.27 to
    0.09 (3 seeds x 50, medium and dense; docs/drive_like_expert.md). An execution setting:
    checkpoints from before it existed get this default (0 restores their old driving)."""
    route_steer_speed: float = 20.0
    """A plan policy: below this speed (m/s), on a junction's approach or inside it, the wheel
    follows the route's centre line (``obs["route_path"]``, pure pursuit with the tracker's
    look-ahead) instead of the plan's lateral offsets; the plan still sets the speed. 0 = off.
    Cloned plans wobble by decimetres at a crawl, which at a 3 m look-ahead turns the wheel
    lock to lock (the junction's off-road episodes). With ``yield_zone`` 30 it roughly halved
    leaving the road at the held-out junction (docs/drive_like_expert.md). 20 (every speed a
    junction is driven at; 4 until 2026-12-07): a policy trained on both scenario families ran
    wide in the junction's turns at 4-5 m/s; steering along the route there cut its held-out
    off-road rate from 0.080 to 0.037 and raised goal success by 0.043; for the junction-only
    policies it changed two episodes in 300 and calmed the wheel (lateral jerk p95 -0.26 m/s^3;
    3 seeds x 50, medium and dense; "One policy for both families" in docs/drive_like_expert.md).
    An execution setting: checkpoints from before it existed get this default; checkpoints saved
    with 4 keep it (``--route-steer-speed 20``)."""
    route_exit_hold: float = 3.0
    """A plan policy whose wheel followed the route inside a junction (``route_steer_speed``)
    keeps following it for up to this many seconds after the junction's exit, until the car
    sits on the route's centre line (within ``ROUTE_SETTLE_OFFSET`` m and ``ROUTE_SETTLE_HEADING``
    rad of it, ``vla.policy``); then the plan steers again. 0 = off: the plan takes the wheel at
    the exit. Why: a policy trained on both scenario families left turns up to 0.2 rad off the
    exit lane's heading, and its plan then straightened the wheel and ran onto the verge. With
    3 s its held-out off-road rate at the junction fell from 0.037 to 0.003 and goal success
    rose by 0.033 [+0.013, +0.057]; the junction-only policies changed one episode in 300
    (one off-road fewer) and both kinds steered more calmly (lateral jerk p95 -0.15 to -0.23
    m/s^3; 3 seeds x 50, medium and dense; "Past the junction's exit" in
    docs/drive_like_expert.md). The highway never arms it (no junction). An execution setting:
    checkpoints from before it existed get this default (0 restores their old driving)."""
    chitchat_threshold: float = 0.95
    """A policy with the command-label head (``command_label_weight`` > 0): words heard during
    the drive are ignored as chit-chat when the head gives ``none`` at least this probability
    (else they become the command). Not the head's argmax: a head trained on chit-chat
    (``--chitchat``) also names unfamiliar commands ``none``. 0.95 balanced dev commands adopted
    against dev chit-chat ignored best (``benchmarks.chitchat_probe``), but no threshold separates
    the two (docs/audio_policy.md). An execution setting."""
    command_readback: float = 0.0
    """A policy with the command-label head: when the head names the words it heard a command
    label (not ``none``) with at least this probability, the policy reads that label's canonical
    command ("change to the left lane", ...) instead of the words themselves, at the start and
    during the drive: it acts on what it understood, in the words its plans follow best. 0 = off
    (the words are read as heard). An execution setting. Off by default: at 0.5 it raised dev goal
    success on held-out words but lost on the held-out seeds (-0.047 IPA, -0.013 heard), since a
    head that misreads makes the car commit to the wrong command (docs/audio_policy.md, "Read-back")."""
    go_zone: float = 10.0
    """A plan policy: the go rule (``sim.yield_check.go_accel``), within this many metres before a
    junction's entry and inside it; 0 = off (10 by default since 2026-12-06, with ``junction_hold``
    and ``yield_paths``: together, 3 seeds x 50 held-out junction episodes per density, goal
    success 0.76 -> 0.93 medium and 0.59 -> 0.89 dense against the yield check alone, collisions
    0.067 -> 0.013 in both; alone it had doubled dense collisions; checkpoints saved before keep
    their 0: ``--go-zone 10``). A car slower than its crossing speed (8 m/s, less
    on a curve) accelerates at least toward 2 m/s^2, ramped at ``tracker_jerk_long`` (the pace
    the yield check then times our path with), when nothing is on its next 12 m of route and,
    before the entry, no crossing actor would meet it; and
    it brakes to stop short of anything on those 12 m. The other half of the yield check:
    cloned plans stand at the line long after the expert would go, and crawl through the
    junction once they do (BC's inertia problem). An execution setting (0 restores the old driving)."""
    go_jerk: float = 1.5
    """A plan policy's go rule (``go_zone`` > 0): how fast (m/s^3) its throttle ramps up to 2 m/s^2
    from the acceleration the car has, and the pace the yield check times our path with; 0 = at
    once (as the expert launches, 3 m/s^2 from one step to the next). Before this setting the go
    rule ramped at the checkpoint's ``tracker_jerk_long`` (1.5, the default since before the go
    rule existed, unless a checkpoint was saved with another), so 1.5 is the default. A ramp of 4
    (with the curve cap) was studied and kept off: dense timeouts fell, goal success did not
    clearly rise (docs/drive_like_expert.md, "The launch and the bend"). An execution setting."""
    go_commit: float = 0.0
    """A plan policy's go rule (``go_zone`` > 0): once it has launched the car at a junction (the
    crossing was clear and it took the car toward its crossing speed), the conflict test that
    would stop the car again (the yield check, the junction hold, the go rule's own) asks two
    vehicles to use one spot within this many seconds of each other instead of the test's 1 s,
    until a rule brakes the car or it leaves the junction; 0 = off (every step tested alike).
    Hysteresis against the flicker the dev traces showed: gaps of a few tenths of a second in
    the test stop a car that has just started and make it start over from zero (docs/
    drive_like_expert.md, "A launch that commits"). 0.75, held out (3 seeds x 50 per density):
    dense goal success +0.047 [+0.007, +0.087] and progress +0.030 [+0.011, +0.052] with
    collisions unchanged, but medium one collision more in 150, so it stays opt-in. An execution
    setting."""
    go_release: float = 0.0
    """A plan policy's go rule (``go_zone`` > 0, ``go_jerk`` > 0): how fast (m/s^3) a car that is
    still braking when the rule launches it lets go of the brake (its acceleration rises at this
    rate up to 0, then at ``go_jerk`` up to 2 m/s^2; the yield check times our path with the same
    profile, ``sim.yield_check.launch_accel``); 0 = at ``go_jerk`` (as before this setting). Dev
    traces: the cloned plan is often braking for the line when the rule launches the car, and at
    1.5 m/s^3 a brake of 3 m/s^2 takes 2 s to let go, most of the gap it was launched into.
    nuPlan's comfort bound on longitudinal jerk is 4.13 m/s^3. Dev (4, 2 seeds x 40 per density):
    dense traffic gains nothing, longitudinal jerk p95 rises by about 1 m/s^3, so it is off
    (docs/drive_like_expert.md, "Three more junction settings"). An execution setting."""
    yield_gap: float = 1.0
    """The junction rules' conflict test (the yield check, the go rule, the junction hold): two
    vehicles that would use one spot of our path within this many seconds of each other conflict
    (``sim.yield_check.YieldParams.time_gap``; the expert's own test asks 1.5 s). While a launch
    holds, ``go_commit`` replaces it. 1.5 with commitment, dev: dense the same totals (26 of 80
    episodes changed), medium one more timeout, so 1 stays. An execution setting."""
    commit_inside: float = 0.0
    """With ``go_commit`` > 0: 1 = inside the junction (past its entry) the rules test with
    ``go_commit``'s time gap whether or not a launch holds; 0 = only while a launch holds. Dev
    traces: most of the time a timed-out car stood was inside the junction, held by the junction
    hold's full 1 s test after some brake had ended its launch, where the expert (which yields only
    before the entry) drives on. Dev: it changed 1 dense episode of 80 (those cars wait out
    conflicts within the commitment's gap too), so it is off. A switch, 0 or 1; an execution
    setting."""
    curve_brake: float = 2.0
    """A plan policy: the curve cap (``sim.yield_check.curve_accel``), within ``yield_zone`` m before a
    junction's entry and inside it: no faster than the speed from which braking at this many
    m/s^2 reaches the route's curve speed at the entry (the expert: 2); 0 = off (the old
    driving). 2 by default since 2026-12-06, checkpoints from before included: 3 seeds x 50
    held-out junction episodes per density, lateral jerk p95 -0.11 [-0.20, -0.03] medium and
    -0.36 [-0.59, -0.18] dense, every outcome the same but one (docs/drive_like_expert.md, "The
    launch and the bend"). An execution setting."""
    junction_ttc: float = 0.0
    """A plan policy: the junction brake (``sim.yield_check.junction_brake``), within ``yield_zone``
    m before a junction's entry and inside it, brakes for any actor (moving or standing, any
    heading, ahead of our rear) it would touch within this many seconds at its present speed
    along its route; 0 = off. Inside the junction nothing else watched what is in front of us,
    but on dev junction episodes 1.5 s traded a few collisions for more timeouts, and none with
    the go rule (docs/drive_like_expert.md). An execution setting."""
    junction_hold: float = 4.0
    """A plan policy: the junction hold (``sim.yield_check.junction_hold``), within ``yield_zone`` m
    before a junction's entry and inside it, below this speed (m/s): where the yield check no
    longer holds the car (inside the junction, or at the line still moving), brake to a stand when
    going on would meet crossing traffic and standing would not; 0 = off (the old driving). On by
    default since 2026-12-06, checkpoints from before included (docs/drive_like_expert.md, "Lane
    paths and the junction hold"). An execution setting."""
    yield_paths: float = 1.0
    """A plan policy: 1 = the yield check, the go rule and the junction hold predict each crossing
    actor along its lane's path (``obs["actor_paths"]``: the road's layout and the actor's turn
    signal, ``sim.route.ACTOR_PATH_POINTS``) where the backend reports one, instead of straight
    along its heading; 0 = straight lines (the old driving). 1 by default since 2026-12-06,
    checkpoints from before included. An execution setting."""
    route_follow: float = 0.0
    """A plan policy: the route follower (``sim.yield_check.route_leader`` / ``follow_accel``), near a
    junction (within ``sim.route.JUNCTION_HORIZON`` m of its entry) and inside it, caps the
    acceleration at the expert's car-following law behind the nearest actor whose centre is on
    our route within this many metres ahead (crossing traffic in our lane included); 0 = off.
    The expert brakes for exactly that, and no other rule of ours did inside the junction, but on
    160 dev junction episodes (with the go rule) 40 m traded 4 collisions for 5 timeouts
    (docs/drive_like_expert.md). An execution setting."""
    yield_turn: float = 0.0
    """A plan policy's yield check and go rule: a crossing actor whose heading changed since the
    last step is predicted on an arc, turning at that rate until it has turned this many radians
    (``sim.yield_check.YieldParams.max_turn``); 0 = straight lines along its heading (the
    default). Straight lines miss an oncoming car turning across our lane and flag a car turning
    away from it, but on dev junction episodes arcs changed neither collisions nor timeouts (a
    car is seen turning only once it is in the junction; docs/drive_like_expert.md). An
    execution setting."""
    merge_brake: float = 2.0
    """A plan policy: a lane change begins only when the merge check (``sim.gap_checks``: the
    expert's MOBIL criterion read from the observed actors) finds that neither the new follower
    nor we would brake harder than this many m/s^2 (the expert's 2); until then the plan keeps
    its lane. 0 = off. With ``follow_brake`` 3 it took dense highway collisions from 5 of 150 held-out
    episodes to 0 (docs/drive_like_expert.md, "The gap checks"). An execution setting:
    checkpoints from before it existed get this default (0 restores their old driving)."""
    follow_brake: float = 3.0
    """A plan policy: the following check (``sim.gap_checks``) brakes harder than the plan when
    keeping 2 m behind the observed car ahead (at its speed 0.5 s on, if it brakes) needs more
    than this many m/s^2 of braking. 0 = off. An execution setting: checkpoints from before it
    existed get this default (0 restores their old driving)."""
    attn_implementation: str = "sdpa"
    """transformers attention kernel: 'sdpa', 'eager' or 'flash_attention_2' (GPU only)."""
    backbone_dir: str = ""
    """A local directory with a pretrained Llama-family decoder (``save_pretrained`` output) to
    start from instead of random weights; its hidden size must equal d_model."""
    head: str = "bins"
    """Action head: 'bins' = autoregressive bin tokens + in-bin residual (the text head's slice);
    'diffusion' = the whole (H, 2) chunk denoised from noise, conditioned on the transformer's
    hidden state at <action> (``vla.diffusion_head``)."""
    diffusion_train_steps: int = 100
    """Diffusion head: DDPM noise levels (train timesteps) of the forward process."""
    diffusion_inference_steps: int = 10
    """Diffusion head: denoising steps per predicted chunk (<= diffusion_train_steps)."""
    diffusion_scheduler: str = "ddim"
    """Diffusion head: inference sampler, 'ddim' (deterministic, eta 0) or 'dpmsolver'
    (DPM-Solver++ multistep)."""
    diffusion_noise: float = 1.0
    """Diffusion head: std of the initial noise at inference. 1 = a true sample of the learned
    chunk distribution (fresh noise at every re-plan); 0 = the deterministic DDIM / DPM-Solver
    map of the zero latent (no sampling noise between re-plans: smoother, mode-seeking)."""
    diffusion_width: int = 128
    """Diffusion head: channels of the 1-D temporal conv denoiser."""
    diffusion_blocks: int = 3
    """Diffusion head: FiLM-conditioned residual conv blocks of the denoiser."""
    ema_decay: float = 0.999
    """Diffusion head: decay of the exponential moving average of the policy's weights that
    predicts at inference (warm-up min(decay, (1 + t) / (10 + t)) at update t); 0 = no EMA.
    Unused by the binned head."""

    def __post_init__(self) -> None:
        if self.action not in ACTION_SPACES:
            raise ValueError(f"PolicyConfig.action must be one of {ACTION_SPACES}, got {self.action!r}")
        positive = ("d_model", "n_layers", "n_heads", "horizon", "camera_width", "camera_height",
                    "camera_patch", "max_command_tokens") + (("replan_every",) if self.replan_every is not None else ())
        for name in positive + ("n_bins",):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < (2 if name == "n_bins" else 1):
                raise ValueError(f"PolicyConfig.{name} must be an integer >= {2 if name == 'n_bins' else 1}, "
                                 f"got {value!r}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ValueError(f"PolicyConfig.d_model {self.d_model} must split into {self.n_heads} heads "
                             "of even size")
        if self.n_bins < 2:
            raise ValueError(f"PolicyConfig.n_bins must be >= 2, got {self.n_bins}")
        if not (isinstance(self.command_bag, int) and self.command_bag >= 0):
            raise ValueError(f"PolicyConfig.command_bag must be an integer >= 0 (0 = off), got {self.command_bag!r}")
        if not 0.0 <= float(self.command_bag_dropout) < 1.0:
            raise ValueError(f"PolicyConfig.command_bag_dropout must be in [0, 1), got {self.command_bag_dropout}")
        if self.command_bag and self.command not in ("ipa", "text", "heard"):
            raise ValueError(f"PolicyConfig.command_bag reads phones or text bytes; command {self.command!r} has none "
                             "(use command 'ipa', 'text' or 'heard')")
        if not 0.0 <= float(self.command_label_weight) < float("inf"):
            raise ValueError(f"PolicyConfig.command_label_weight must be a finite number >= 0, "
                             f"got {self.command_label_weight}")
        if not 0.0 <= float(self.command_thought_noise) <= 1.0:
            raise ValueError(f"PolicyConfig.command_thought_noise must be in [0, 1], got {self.command_thought_noise}")
        if self.command_thought and not (self.command_label_weight > 0 and self.head == "bins"):
            raise ValueError("PolicyConfig.command_thought feeds the command-label head's reading to the bins head: "
                             f"it needs command_label_weight > 0 (got {self.command_label_weight}) and head 'bins' "
                             f"(got {self.head!r})")
        if not 0.0 <= float(self.forecast_weight) < float("inf"):
            raise ValueError(f"PolicyConfig.forecast_weight must be a finite number >= 0, got {self.forecast_weight}")
        if self.mlp_ratio <= 0 or self.residual_weight < 0 or not 0 <= float(self.ensemble_decay or 0) < float("inf"):
            raise ValueError("PolicyConfig.mlp_ratio must be > 0, residual_weight and ensemble_decay >= 0")
        if self.camera_width % self.camera_patch or self.camera_height % self.camera_patch:
            raise ValueError(f"PolicyConfig.camera_patch {self.camera_patch} must divide "
                             f"{self.camera_width}x{self.camera_height}")
        if self.command not in COMMAND_MODALITIES:
            raise ValueError(f"PolicyConfig.command must be one of {COMMAND_MODALITIES}, got {self.command!r}")
        if self.command == "audio":
            if not self.audio_codec:
                raise ValueError("PolicyConfig.command 'audio' needs audio_codec, a codec directory (vla train-codec)")
            for name in ("audio_n_q", "audio_group"):
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                    raise ValueError(f"PolicyConfig.{name} must be an integer >= 1, got {value!r}")
        if self.command == "heard" and not self.audio_ear:
            raise ValueError("PolicyConfig.command 'heard' needs audio_ear, an ear directory (vla train-ear)")
        if self.observation not in OBSERVATION_CHOICES:
            raise ValueError(f"PolicyConfig.observation must be one of {OBSERVATION_CHOICES}, got {self.observation!r}")
        if self.action == "plan" and self.head != "bins":
            raise ValueError(f"PolicyConfig.action 'plan' needs head 'bins' (the {self.head!r} head predicts "
                             "raw control chunks only)")
        if not (math.isfinite(self.tracker_lookahead) and self.tracker_lookahead > 0):
            raise ValueError(f"PolicyConfig.tracker_lookahead must be a finite time > 0 in s, got {self.tracker_lookahead}")
        if not (math.isfinite(self.commit_margin) and self.commit_margin >= 0):
            raise ValueError(f"PolicyConfig.commit_margin must be a finite number of nats >= 0, got {self.commit_margin}")
        if not (math.isfinite(self.route_steer_speed) and self.route_steer_speed >= 0):
            raise ValueError(f"PolicyConfig.route_steer_speed must be a finite speed >= 0 in m/s (0 = off), got "
                             f"{self.route_steer_speed}")
        if not (math.isfinite(self.route_exit_hold) and self.route_exit_hold >= 0):
            raise ValueError(f"PolicyConfig.route_exit_hold must be a finite time >= 0 in s (0 = off), got "
                             f"{self.route_exit_hold}")
        if not (math.isfinite(self.follow_brake) and self.follow_brake >= 0):
            raise ValueError(f"PolicyConfig.follow_brake must be a finite deceleration >= 0 in m/s^2 (0 = off), got "
                             f"{self.follow_brake}")
        if not (math.isfinite(self.merge_brake) and self.merge_brake >= 0):
            raise ValueError(f"PolicyConfig.merge_brake must be a finite deceleration >= 0 in m/s^2 (0 = off), got "
                             f"{self.merge_brake}")
        if not 0.0 <= self.command_readback <= 1.0:
            raise ValueError(f"PolicyConfig.command_readback must be a probability in [0, 1] (0 = off), got "
                             f"{self.command_readback}")
        if not 0.0 < self.chitchat_threshold <= 1.0:
            raise ValueError(f"PolicyConfig.chitchat_threshold must be a probability in (0, 1], got {self.chitchat_threshold}")
        if not (math.isfinite(self.route_follow) and self.route_follow >= 0):
            raise ValueError(f"PolicyConfig.route_follow must be a finite distance >= 0 in m (0 = off), got {self.route_follow}")
        for name, values in SWITCHES.items():
            if getattr(self, name) not in (0.0, 1.0):
                raise ValueError(f"PolicyConfig.{name} must be {values}, got {getattr(self, name)}")
        if not (math.isfinite(self.junction_hold) and self.junction_hold >= 0):
            raise ValueError(f"PolicyConfig.junction_hold must be a finite speed >= 0 in m/s (0 = off), got {self.junction_hold}")
        if not (math.isfinite(self.go_jerk) and self.go_jerk >= 0):
            raise ValueError(f"PolicyConfig.go_jerk must be a finite jerk >= 0 in m/s^3 (0 = at once), got {self.go_jerk}")
        if not (math.isfinite(self.go_commit) and self.go_commit >= 0):
            raise ValueError(f"PolicyConfig.go_commit must be a finite time gap >= 0 in s (0 = off), got {self.go_commit}")
        if not (math.isfinite(self.go_release) and self.go_release >= 0):
            raise ValueError(f"PolicyConfig.go_release must be a finite jerk >= 0 in m/s^3 (0 = at go_jerk), got "
                             f"{self.go_release}")
        if not (math.isfinite(self.yield_gap) and self.yield_gap > 0):
            raise ValueError(f"PolicyConfig.yield_gap must be a finite time gap > 0 in s, got {self.yield_gap}")
        if not (math.isfinite(self.curve_brake) and self.curve_brake >= 0):
            raise ValueError(f"PolicyConfig.curve_brake must be a finite deceleration >= 0 in m/s^2 (0 = off), got "
                             f"{self.curve_brake}")
        if not (math.isfinite(self.junction_ttc) and self.junction_ttc >= 0):
            raise ValueError(f"PolicyConfig.junction_ttc must be a finite time >= 0 in s (0 = off), got {self.junction_ttc}")
        if not (math.isfinite(self.yield_turn) and 0 <= self.yield_turn <= math.pi):
            raise ValueError(f"PolicyConfig.yield_turn must be a finite angle in [0, pi] rad (0 = off), got {self.yield_turn}")
        if not (math.isfinite(self.go_zone) and self.go_zone >= 0):
            raise ValueError(f"PolicyConfig.go_zone must be a finite distance >= 0 in m (0 = off), got {self.go_zone}")
        if not (math.isfinite(self.yield_zone) and self.yield_zone >= 0):
            raise ValueError(f"PolicyConfig.yield_zone must be a finite distance >= 0 in m (0 = off), got {self.yield_zone}")
        if min(self.tracker_jerk_long, self.tracker_jerk_lat) < 0:
            raise ValueError(f"PolicyConfig.tracker_jerk_long / tracker_jerk_lat must be >= 0 (0 = no limit), got "
                             f"{self.tracker_jerk_long} / {self.tracker_jerk_lat}")
        if self.execution not in EXECUTION_MODES:
            raise ValueError(f"PolicyConfig.execution must be one of {EXECUTION_MODES}, got {self.execution!r}")
        if self.attn_implementation not in ("sdpa", "eager", "flash_attention_2"):
            raise ValueError(f"PolicyConfig.attn_implementation {self.attn_implementation!r} is not "
                             "'sdpa', 'eager' or 'flash_attention_2'")
        self._check_head()

    def _check_head(self) -> None:
        if self.head not in ACTION_HEADS:
            raise ValueError(f"PolicyConfig.head must be one of {ACTION_HEADS}, got {self.head!r}")
        for name in ("diffusion_train_steps", "diffusion_inference_steps", "diffusion_width", "diffusion_blocks"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"PolicyConfig.{name} must be an integer >= 1, got {value!r}")
        if self.diffusion_inference_steps > self.diffusion_train_steps:
            raise ValueError(f"PolicyConfig.diffusion_inference_steps {self.diffusion_inference_steps} must be "
                             f"<= diffusion_train_steps {self.diffusion_train_steps}")
        if self.diffusion_scheduler not in DIFFUSION_SCHEDULERS:
            raise ValueError(f"PolicyConfig.diffusion_scheduler must be one of {DIFFUSION_SCHEDULERS}, "
                             f"got {self.diffusion_scheduler!r}")
        if not 0.0 <= self.diffusion_noise < float("inf"):
            raise ValueError(f"PolicyConfig.diffusion_noise must be a finite number >= 0, got {self.diffusion_noise}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"PolicyConfig.ema_decay must be in [0, 1), got {self.ema_decay}")

    @property
    def command_group(self) -> int:
        """Vocabulary ids per command position: ``audio_group * audio_n_q`` for audio, else 1."""
        return self.audio_group * self.audio_n_q if self.command == "audio" else 1

    @property
    def command_ids_max(self) -> int:
        """Command ids kept per sample: ``max_command_tokens`` positions."""
        return self.max_command_tokens * self.command_group

    @property
    def decay(self) -> float:
        """``ensemble_decay``, or the action space's default when it is None."""
        return DEFAULT_ENSEMBLE_DECAY[self.action] if self.ensemble_decay is None else float(self.ensemble_decay)

    @property
    def replan_period(self) -> int:
        """``replan_every``, or the action space's default when it is None."""
        return DEFAULT_REPLAN_EVERY[self.action] if self.replan_every is None else int(self.replan_every)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> PolicyConfig:
        known = {f.name for f in fields(PolicyConfig)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown PolicyConfig fields {unknown}")
        return PolicyConfig(**{"observation": LEGACY_OBSERVATION, "replan_every": 1, **d})


SIZES = {
    "tiny": dict(d_model=32, n_layers=2, n_heads=2, n_bins=32, horizon=4),
    "small": dict(d_model=96, n_layers=3, n_heads=4, n_bins=64, horizon=4),
    "base": dict(d_model=192, n_layers=6, n_heads=6, n_bins=128, horizon=8),
    "large": dict(d_model=768, n_layers=12, n_heads=12, n_bins=256, horizon=8),
}
"""Named policy sizes (``--size``); 'small' is the CPU default, 'large' (~100M parameters) is
for a GPU (``vla bench gpu``)."""


VAL_SAMPLES = 2048
"""Default samples per side of ``vla.data.open_loop_validation`` (``--val-samples`` of
``vla train bc`` and ``vla dagger``); here, not in ``vla.data``, so that command-line parsers
can name it without importing torch."""
