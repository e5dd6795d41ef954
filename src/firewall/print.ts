// What `rules` prints: the firewall half of what `run` installs, rendered by the same functions
// the backends apply, in a form its tool accepts as printed (`nft -f`, `nft -j -f`,
// `iptables-restore --noflush`, `ip6tables-restore --noflush`). Pure.
import type { FirewallBackend } from '../config.js';
import { NOTHING_INSTALLED, renderIptablesInstall } from './iptables-render.js';
import { renderNftText, renderRuleset, type FirewallSpec } from './render.js';

export type RulesFormat = 'nft' | 'json' | 'iptables' | 'ip6tables';
export const RULES_FORMATS: readonly RulesFormat[] = ['nft', 'json', 'iptables', 'ip6tables'];

/** The format `rules` prints when none is asked for. */
export function defaultRulesFormat(backend: FirewallBackend): RulesFormat {
  return backend === 'iptables' ? 'iptables' : 'nft';
}

/** Formats that show what `backend` installs. */
function formatsOf(backend: FirewallBackend): readonly RulesFormat[] {
  return backend === 'iptables' ? ['iptables', 'ip6tables'] : ['nft', 'json'];
}

/**
 * The ruleset in `format`. For iptables it is the restore input of a start on a host where
 * nothing of ours is installed yet (after a crash, `run` also drops the duplicate jump it finds).
 * Throws RangeError for a format of the other backend, or ip6tables with IPv6 disabled.
 */
export function printRuleset(spec: FirewallSpec, backend: FirewallBackend, format: RulesFormat): string {
  if (!formatsOf(backend).includes(format)) {
    throw new RangeError(`--format ${format} shows the ${backend === 'iptables' ? 'nftables' : 'iptables'} backend, but intercept.backend is "${backend}": use --format ${formatsOf(backend).join(' or ')}`);
  }
  switch (format) {
    case 'nft':
      return renderNftText(renderRuleset(spec));
    case 'json':
      return `${JSON.stringify(renderRuleset(spec), null, 2)}\n`;
    case 'iptables':
      return renderIptablesInstall(spec, 4, NOTHING_INSTALLED);
    case 'ip6tables':
      if (spec.listen.address6 === null) throw new RangeError('--format ip6tables: IPv6 is disabled (listen.address6), so nothing is installed for it');
      return renderIptablesInstall(spec, 6, NOTHING_INSTALLED);
  }
}
