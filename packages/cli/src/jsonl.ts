import { createReadStream, statSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { CliError, messageOf, usageError } from './io.ts';

export interface Line {
  text: string;
  /** 1-based, for error messages. */
  number: number;
  /** Share of the file read so far (files only). */
  fraction?: number | undefined;
}

/** Where a line came from, for error messages: `warm.jsonl:12` or `stdin:12`. */
export function where(file: string | undefined, line: number): string {
  return `${file === undefined || file === '-' ? 'stdin' : file}:${line}`;
}

/** Non-empty lines of a file, or of stdin when `file` is absent or `-`. */
export async function* readLines(
  file: string | undefined,
  stdin: NodeJS.ReadableStream & { isTTY?: boolean | undefined },
): AsyncGenerator<Line> {
  let input: NodeJS.ReadableStream;
  let size: number | undefined;
  let stream: ReturnType<typeof createReadStream> | undefined;
  if (file === undefined || file === '-') {
    if (stdin.isTTY) throw usageError('give a file, or pipe JSONL into stdin');
    input = stdin;
  } else {
    try {
      const stat = statSync(file);
      if (!stat.isFile()) throw new Error('not a file');
      size = stat.size;
    } catch (error) {
      throw new CliError(`cannot read ${file}: ${messageOf(error)}`);
    }
    stream = createReadStream(file);
    input = stream;
  }
  const lines = createInterface({ input, crlfDelay: Number.POSITIVE_INFINITY });
  let number = 0;
  try {
    for await (const text of lines) {
      number++;
      if (text.trim() === '') continue;
      const fraction = stream && size ? stream.bytesRead / size : undefined;
      yield { text, number, fraction };
    }
  } finally {
    lines.close();
    stream?.destroy();
  }
}

export function parseJsonLine(line: Line, file: string | undefined): unknown {
  try {
    return JSON.parse(line.text);
  } catch (error) {
    throw new CliError(`${where(file, line.number)}: not valid JSON (${messageOf(error)})`);
  }
}
