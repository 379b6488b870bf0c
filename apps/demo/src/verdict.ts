/** Whether the warm run was served from the cache: the demo's exit status. */
import type { OperationRecord, PassFigures } from './measure.ts';
import { sumFigures } from './report.ts';

export interface Summary {
  /** Every warm lookup was a hit, no warm call reached a local model or re-ran a tool, and every answer was the same. */
  ok: boolean;
  /** What failed, one line per operation. */
  problems: string[];
  cold: PassFigures;
  warm: PassFigures;
}

/** Checks the warm run operation by operation. `local`: the models count their calls, so check those too. */
export function summarise(records: readonly OperationRecord[], local: boolean): Summary {
  const problems: string[] = [];
  for (const record of records) {
    const warm = record.warm;
    const where = `${record.adapter} › ${record.operation}`;
    if (!warm || warm.calls === 0) problems.push(`${where}: the warm run made no cache lookups`);
    else if (warm.hits < warm.calls)
      problems.push(`${where}: ${warm.calls - warm.hits} of ${warm.calls} warm lookups missed`);
    if (local && warm?.modelCalls)
      problems.push(`${where}: ${warm.modelCalls} warm call(s) reached the model`);
    if (warm?.toolExecutions) problems.push(`${where}: ${warm.toolExecutions} warm tool call(s) ran again`);
    if (record.sameAnswer === false) problems.push(`${where}: the warm answer differs from the cold one`);
  }
  return {
    ok: problems.length === 0,
    problems,
    cold: sumFigures(records.map((record) => record.cold)),
    warm: sumFigures(records.map((record) => record.warm)),
  };
}
