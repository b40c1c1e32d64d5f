"""Job-level code: what one ``netslim`` command does from settings to files on disk.

A job orders calls into the method packages and services (build, train, prune, measure, save,
report); it parses no arguments (that is ``netslim.cli``) and decides nothing about pruning
itself (that is the method packages). Floor: ``cli`` > ``jobs`` > ``api`` > methods > services.
"""
