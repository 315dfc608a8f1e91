"""Jobs (SPEC §15): saved run definitions with parameters, schedules, retries and concurrency groups."""
