#!/usr/bin/env node
import { run } from './cli.ts';

// `llm-cache ls | head` closes the pipe early: that is not an error worth a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

const code = await run(process.argv.slice(2));
// Exit as soon as the output is flushed: a connection attempt to an unreachable Redis can leave a
// half-closed socket that would otherwise keep the process alive for seconds.
let pending = 2;
const flushed = () => {
  if (--pending === 0) process.exit(code);
};
process.stdout.write('', flushed);
process.stderr.write('', flushed);
