"""Transactional messages: half messages, END_TRANSACTION and the check-back service.

Everything durable is a message in the log (half, op and parked records) or a consumer
offset of the system group, so a DLedger group replicates it like any other write.
"""
