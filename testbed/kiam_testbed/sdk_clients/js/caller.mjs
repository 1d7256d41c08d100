// Run inside a test pod: the AWS SDK for JavaScript v3 finds credentials through its
// default Node chain (which ends at the instance metadata service, IMDSv2 first), then
// calls STS GetCallerIdentity at the endpoint given as the only argument.
// Prints one JSON line: {"ok": true, "access_key_id": ..., "arn": ...} or
// {"ok": false, "error": ...}. Never prints the secret key or the session token.
import { STSClient, GetCallerIdentityCommand } from "@aws-sdk/client-sts";
import { fromNodeProviderChain } from "@aws-sdk/credential-providers";

const endpoint = process.argv[2];
const report = (doc) => process.stdout.write(JSON.stringify(doc) + "\n");

try {
  const provider = fromNodeProviderChain();
  const creds = await provider();
  const client = new STSClient({ region: "us-east-1", endpoint, credentials: creds });
  const out = await client.send(new GetCallerIdentityCommand({}));
  report({ ok: true, access_key_id: creds.accessKeyId, arn: out.Arn });
} catch (err) {
  report({ ok: false, error: `${err.name}: ${err.message}` });
  process.exitCode = 1;
}
