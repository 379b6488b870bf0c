import { describe, expect, it } from 'vitest';
import type { OperationRecord, PassFigures } from '../src/measure.ts';
import { summarise } from '../src/verdict.ts';

function figures(
  calls: number,
  hits: number,
  modelCalls: number | undefined,
  toolExecutions = 0,
): PassFigures {
  return {
    toolCalls: 2,
    toolExecutions,
    calls,
    hits,
    ms: 1,
    inputTokensSaved: hits * 10,
    outputTokensSaved: hits * 20,
    costSavedUsd: hits * 0.0001,
    modelCalls,
    servedBy: hits > 0 ? ['sqlite'] : [],
  };
}

function record(operation: string, warm: PassFigures | undefined, sameAnswer = true): OperationRecord {
  return {
    adapter: 'demo/ai-sdk',
    operation,
    cold: figures(3, 0, 3),
    ...(warm ? { warm } : {}),
    sample: 'an answer',
    sameAnswer,
  };
}

describe('the verdict that decides the exit code', () => {
  it('passes when every warm lookup hit, no warm call reached the model and the answers matched', () => {
    const summary = summarise(
      [record('generateText ×3', figures(3, 3, 0)), record('streamText', figures(1, 1, 0))],
      true,
    );
    expect(summary).toMatchObject({ ok: true, problems: [] });
    expect(summary.warm).toMatchObject({ calls: 4, hits: 4, modelCalls: 0 });
    expect(summary.cold).toMatchObject({ calls: 6, hits: 0, modelCalls: 6 });
  });

  it('fails on a warm miss, a warm model call, a changed answer, no lookups at all or a tool that ran again', () => {
    const summary = summarise(
      [
        record('generateText ×3', figures(3, 2, 1)),
        record('streamText', figures(1, 1, 0), false),
        record('embedMany', figures(0, 0, 0)),
        record('tool loop', figures(4, 4, 0, 1)),
      ],
      true,
    );
    expect(summary.ok).toBe(false);
    expect(summary.problems).toEqual([
      'demo/ai-sdk › generateText ×3: 1 of 3 warm lookups missed',
      'demo/ai-sdk › generateText ×3: 1 warm call(s) reached the model',
      'demo/ai-sdk › streamText: the warm answer differs from the cold one',
      'demo/ai-sdk › embedMany: the warm run made no cache lookups',
      'demo/ai-sdk › tool loop: 1 warm tool call(s) ran again',
    ]);
  });

  it('does not count model calls with real providers (they are not counted), only lookups', () => {
    expect(summarise([record('generateText ×3', figures(3, 3, undefined))], false).ok).toBe(true);
    expect(summarise([record('generateText ×3', figures(3, 2, undefined))], false).ok).toBe(false);
  });
});
