// doctor's output, pure: text for people, JSON for tools, and the exit status.
import type { Finding, Severity } from './types.js';

const LABEL: Record<Severity, string> = { ok: 'ok', warn: 'WARN', error: 'ERROR', skip: 'skip' };

export interface DoctorReport {
  readonly ok: boolean;
  readonly errors: number;
  readonly warnings: number;
  readonly findings: readonly Finding[];
}

export function summarize(findings: readonly Finding[]): DoctorReport {
  const errors = findings.filter((f) => f.severity === 'error').length;
  const warnings = findings.filter((f) => f.severity === 'warn').length;
  return { ok: errors === 0, errors, warnings, findings };
}

/** 1 when any check found an error; warnings alone do not fail. */
export function exitStatus(report: DoctorReport): 0 | 1 {
  return report.ok ? 0 : 1;
}

export function renderText(report: DoctorReport, header: string): string {
  const width = Math.max(...report.findings.map((f) => f.check.length));
  const lines = [header, ''];
  for (const f of report.findings) {
    lines.push(`${LABEL[f.severity].padEnd(5)}  ${f.check.padEnd(width)}  ${f.summary}`);
    const indent = ' '.repeat(5 + 2 + width + 2);
    (f.fix ?? []).forEach((fix, i) => lines.push(`${indent}${i === 0 ? 'fix: ' : '     '}${fix}`));
  }
  lines.push('');
  const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;
  lines.push(report.ok
    ? `no errors${report.warnings > 0 ? `, ${plural(report.warnings, 'warning')}` : ''}`
    : `${plural(report.errors, 'error')}, ${plural(report.warnings, 'warning')}: fix the errors before \`run\``);
  return `${lines.join('\n')}\n`;
}

export function renderJson(report: DoctorReport, config: string): string {
  return `${JSON.stringify({ config, ...report }, null, 2)}\n`;
}
