// `tproxy-interceptor doctor --config FILE [--backend ADDR[:PORT]] [--probe-source ADDR] [--json]`:
// checks this host for what would stop interception or break other software. Exit codes: 0 no
// errors (warnings allowed), 1 errors found, 2 bad usage or configuration.
import { realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config-parse.js';
import { runDoctor } from '../doctor/doctor.js';
import { defaultGatherDeps } from '../doctor/gather.js';
import { parseBackendArg, probeSource } from '../doctor/probe.js';
import { exitStatus, renderJson, renderText } from '../doctor/report.js';
import { InterceptorError } from '../errors.js';

export const DOCTOR_USAGE = `usage: tproxy-interceptor doctor --config FILE [--backend ADDR[:PORT]] [--probe-source ADDR] [--json]

Checks this host for what would stop interception or break other software: kernel support
(nft --check, nothing applied), capabilities, conflicting ip rules, mark bits other rules use,
src_valid_mark/rp_filter, route_localnet, the listener port, IPv6, our route table. Each problem
comes with the command that fixes it.

  --backend ADDR[:PORT]  also probe whether that backend's replies come back through this host:
                         one connection from a spoofed source (needs the daemon's rules installed)
  --probe-source ADDR    the spoofed source (default 192.0.2.1 / 2001:db8::1, documentation
                         addresses); use a client's address when the backend routes only the
                         client networks through this host
  --json                 machine-readable report

exit status: 0 no errors (warnings allowed), 1 errors found, 2 bad usage or configuration
`;

/** The scripts a running daemon or worker of this installation runs (to recognise its listener). */
function selfScripts(): string[] {
  const dist = dirname(fileURLToPath(import.meta.url)); // dist/cli
  const scripts = [join(dist, '..', 'cli.js')];
  const argv1 = process.argv[1];
  if (argv1 !== undefined) {
    scripts.push(argv1);
    try {
      scripts.push(realpathSync(argv1));
    } catch {
      // keep what we have
    }
  }
  return [...new Set(scripts)];
}

export async function runDoctorCommand(args: string[], io: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }): Promise<number> {
  let values: { config?: string; backend?: string; 'probe-source'?: string; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args,
      options: { config: { type: 'string' }, backend: { type: 'string' }, 'probe-source': { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    io.stderr.write(`tproxy-interceptor doctor: ${(err as Error).message}\n${DOCTOR_USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout.write(DOCTOR_USAGE);
    return 0;
  }
  if (!values.config) {
    io.stderr.write(`tproxy-interceptor doctor: --config FILE is required\n${DOCTOR_USAGE}`);
    return 2;
  }
  if (values['probe-source'] !== undefined && values.backend === undefined) {
    io.stderr.write('tproxy-interceptor doctor: --probe-source needs --backend\n');
    return 2;
  }
  const config = await loadConfig(values.config);
  let backend = null;
  let source = null;
  try {
    if (values.backend !== undefined) {
      backend = parseBackendArg(values.backend, config);
      source = probeSource(values['probe-source'], backend);
    }
  } catch (err) {
    if (err instanceof InterceptorError && err.code === 'ERR_USAGE') {
      io.stderr.write(`tproxy-interceptor doctor: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const report = await runDoctor({ config, deps: defaultGatherDeps(selfScripts()), backend, source });
  const { mark, mask, routeTable } = config.intercept;
  const header = `tproxy-interceptor doctor: ${values.config} (mark 0x${mark.toString(16)}/0x${mask.toString(16)}, route table ${routeTable}, listener port ${config.listen.port})`;
  io.stdout.write(values.json ? renderJson(report, values.config) : renderText(report, header));
  return exitStatus(report);
}
