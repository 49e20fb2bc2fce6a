/**
 * Service configuration: typed flag definitions (integers with bounds, durations with units,
 * addresses, URLs, choices, secrets, lists), their resolution from the command line, the
 * environment and a TOML config file (in that precedence), one resolver for secret
 * references, and `--help` text. Pure: the process side (argv, exit, signals) is the
 * services' kit.
 * @module
 */

export {
  ConfigError,
  type ConfigErrorReason,
  type ConfigFile,
  type ConfigFlag,
  type ConfigValue,
  configValue,
  keyLine,
  loadConfigFile,
  parseConfig,
} from "./load.ts";
export { formatDurationMs, parseDurationMs } from "./duration.ts";
export {
  type FlagDef,
  type FlagDefs,
  type FlagKind,
  type FlagValue,
  FlagValueError,
  type FlagValues,
  parseFlagValue,
} from "./flags.ts";
export {
  type ArgvValues,
  describeSource,
  FlagError,
  type Resolved,
  resolveFlags,
  type ResolveInput,
  secretFileFlagName,
  type ValueSource,
  withSecretFiles,
} from "./resolve.ts";
export {
  isSecretRef,
  PlaceholderSecretError,
  placeholderSecretPrefix,
  readSecretFile,
  refusePlaceholder,
  resolveSecret,
  SecretError,
  type SecretErrorReason,
} from "./secret.ts";
export {
  allFlags,
  commandOnlyFlags,
  type CommonFlags,
  commonFlags,
  configFileFlags,
  parseArgv,
  type ServiceCommand,
  usage,
} from "./command.ts";
export { changedKeys } from "./diff.ts";
