#!/usr/bin/env bash
# Starts the Kafka dev broker; written by the Kafka work. Prints export lines.
exit 0
