"""Secrets (SPEC §17): values stored encrypted, given to runs in their environment, masked in output.

The package's modules are imported by path (`runsvc.secrets.masking`, `.service`, `.keyfile`): the
agent process needs only masking.py, which imports nothing of runsvc, and must not pull in the store.
"""
