#!/usr/bin/env node
/** `fedproto-node`: the executable; everything it does is in `command.ts`, which tests import. */
import { main } from "./command.js";

const status = await main(process.argv.slice(2));
if (status !== 0) process.exitCode = status;
