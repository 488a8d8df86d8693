/**
 * The text that `kmaas --help` and every command's help add after the options: where settings
 * come from, the environment variables that give them, and the defaults. Lines fit 80 columns.
 */

export const ENVIRONMENT_HELP = `
Environment (an option on the command line wins over its variable):
  KMAAS_URL          coordinator base URL (--url)
  KMAAS_USER         the user who signs in to derive keys: encrypt, decrypt,
                     rewrap (--user); default: the cluster file's dev user of
                     the tenant
  KMAAS_PASSWORD     that user's password; or a file that holds it:
                     KMAAS_PASSWORD_FILE (--password-file). Never a value on
                     the command line
  KMAAS_OIDC_ISSUER  the identity provider to sign in at (--issuer)
  KMAAS_ADMIN_TOKEN  operator token, to create tenants (--admin-token)
  KMAAS_PINS         pins file (--pins); default: the one the cluster file
                     names, else ~/.kmaas/pins.json
  KMAAS_CLUSTER      cluster file (--cluster); default:
                     ./data/cluster/cluster.json, looked up in the current
                     folder and used when it exists

Settings come from, strongest first: the option, its environment variable, the
cluster file ({ url, adminToken, pins, issuer, devUsers }), the default.
\`npm run cluster\` writes ./data/cluster/cluster.json once the local cluster is
up, so commands run in the folder it was started from need no settings. Each
encrypt, decrypt or rewrap signs in afresh, with a new DPoP key of its own.`;

/** Only in `kmaas --help`: each command's help shows its own defaults with its options. */
export const PROGRAM_HELP = `
Defaults:
  --doc          the input file name (encrypt)
  --key-version  the latest key version of the tenant (encrypt, tenant pin)
  --to-version   the latest key version of each envelope's tenant (rewrap)
  --threshold    the committee's, else a majority of the nodes (tenant create);
                 the current one (committee add, committee remove)
  --pins         the pins file the cluster file names, else ~/.kmaas/pins.json
  --cluster      ./data/cluster/cluster.json in the current folder, if it exists

Examples:
  kmaas status
  kmaas tenant create acme
  kmaas committee add 6 7 --threshold 4
  kmaas encrypt report.pdf -o report.pdf.kmaas --tenant acme
  kmaas decrypt report.pdf.kmaas -o report.pdf
  kmaas rewrap documents/`;
