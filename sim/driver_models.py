"""The driver models every backend's expert shares, free of any simulator: the Intelligent
Driver Model, the ACC model blend, and the parameters of the expert's driving (used by the
embedded expert ``sim.highway_expert`` and the CARLA expert ``sim.carla_expert``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ExpertParams:
    a_max: float = 3.0  # IDM maximum acceleration, m/s^2
    b_comf: float = 3.0  # comfortable deceleration (IDM's b, and the ACC blend's scale), m/s^2
    coolness: float = 0.99  # ACC model: weight of the constant-acceleration heuristic
    car_length: float = 5.0  # m, to turn centre distances into bumper gaps
    b_free: float = 2.0  # deceleration scale when faster than the desired speed, m/s^2
    s0: float = 10.0  # jam distance, centre to centre (5 m bumper gap for 5 m cars)
    time_gap: float = 1.5  # desired time headway, s
    delta: float = 4.0  # IDM acceleration exponent
    b_safe: float = 2.0  # MOBIL: the most braking a lane change may impose, m/s^2
    commit_offset: float = 0.5  # m toward the new lane after which a change continues
    mobil_gain: float = 0.2  # m/s^2 of extra acceleration that makes a free lane change worth it
    overtake_margin: float = 1.0  # m/s below the desired speed before free lane changes are considered
    lat_acc_max: float = 3.0  # curve speed: v <= sqrt(lat_acc_max * radius)
    conflict_horizon: float = 5.0  # s
    conflict_radius: float = 3.5  # m, centre distance that counts as the same spot
    conflict_time_gap: float = 1.5  # s, how close in time two vehicles may use one spot
    tau_lateral: float = 1.2  # s, lateral position time constant
    tau_heading: float = 0.4  # s, heading time constant
    lat_speed_max: float = 1.5  # m/s, fastest approach to the target lane's centre
    steer_lat_acc_max: float = 3.5  # m/s^2, lateral acceleration the steering may ask for
    wheelbase_half: float = 2.5  # m, the bicycle model's L/2


PARAMS = ExpertParams()


def idm(v: float, v0: float, gap: float | None, dv: float, p: ExpertParams = PARAMS) -> float:
    """IDM acceleration for speed v toward v0, with a leader at centre distance ``gap`` closing
    at ``dv`` = v - v_leader (None: free road). Above v0 the free-road term is the improved
    IDM's ``-b_free (1 - (v0 / v)^(a_max delta / b_free))`` (Treiber & Kesting 2013), which
    slows down gently instead of braking at ``a_max ((v / v0)^delta - 1)``."""
    v, v0 = max(v, 0.0), max(v0, 0.1)
    if v <= v0:
        acc = p.a_max * (1.0 - (v / v0) ** p.delta)
    else:
        acc = -p.b_free * (1.0 - (v0 / v) ** (p.a_max * p.delta / p.b_free))
    if gap is not None:
        s_star = p.s0 + v * p.time_gap + v * dv / (2.0 * np.sqrt(p.a_max * p.b_comf))
        acc -= p.a_max * (max(s_star, 0.0) / max(gap, 0.1)) ** 2
    return float(acc)


def acc_model(v: float, v0: float, gap: float | None, dv: float, p: ExpertParams = PARAMS) -> float:
    """The ego's own car-following law: IDM blended with the constant-acceleration heuristic
    (the "ACC model", Kesting, Treiber & Helbing 2010) with the leader's acceleration taken
    as 0. Where IDM brakes harder than the situation needs (a leader a bit too close but not
    closing fast, e.g. after a cut-in) it brakes ``~b_comf`` instead of up to the limit:

        a_cah = -dv^2 / (2 s)  if the leader is slower or stopped, else 0   (s: bumper gap)
        a = a_idm                                        if a_idm >= a_cah
        a = (1 - c) a_idm + c (a_cah + b tanh((a_idm - a_cah) / b))  otherwise
    """
    a_idm = idm(v, v0, gap, dv, p)
    if gap is None:
        return a_idm
    bumper = max(gap - p.car_length, 0.1)
    v_leader = v - dv
    a_cah = -(dv**2) / (2.0 * bumper) if (dv > 0 or v_leader <= 0.1) else 0.0
    if a_idm >= a_cah:
        return a_idm
    c, b = p.coolness, p.b_comf
    return float((1 - c) * a_idm + c * (a_cah + b * np.tanh((a_idm - a_cah) / b)))
