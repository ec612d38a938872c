"""Invites: what they carry, their signed wire format, the organizer's keys, QR codes."""
