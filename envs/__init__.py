"""Gymnasium environments of r2dn-control, installed as ``r2dn_control.envs``."""
