/*
 * cli_run.h: `thawd run SPEC.json [--out DIR] [--threads N] [--timeline FILE]`, one job in
 * the foreground; --timeline also writes every engine event with its wall time as JSON lines.
 */
#pragma once

/* Runs the command with the arguments after "run" (argv[0] is SPEC.json). Returns the exit
 * status: 0 success, 1 the job failed or was cancelled (SIGINT), 2 bad usage or spec. */
int srv_cli_run(int argc, char **argv);
