/*
 * cli_predict.h: `thawd predict` (logits or probabilities of a trained model for a batch of
 * inputs in an IDX file) and `thawd summary` (learn.summary() of an architecture).
 */
#pragma once

/* Both take the arguments after the command name and return the exit status: 0 success,
 * 1 the model or input could not be loaded, 2 bad usage. Output goes to stdout, errors to
 * stderr. */
int srv_cli_predict(int argc, char **argv);
int srv_cli_summary(int argc, char **argv);
