-- The DDL `prisma migrate dev` generates for schema.prisma, followed by the index the
-- candidate query needs (added to the generated migration by hand).
-- Prisma's DateTime is TIMESTAMP(3) WITHOUT TIME ZONE holding UTC, so the statements convert
-- with AT TIME ZONE 'UTC' in both directions.

-- CreateEnum
CREATE TYPE "MessageDirection" AS ENUM ('INBOUND', 'OUTBOUND');

-- CreateTable
CREATE TABLE "Lead" (
    "id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "email" TEXT NOT NULL,
    "company" TEXT,
    "bookedAt" TIMESTAMP(3),
    "lastMessageAt" TIMESTAMP(3),
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "Lead_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "Message" (
    "id" TEXT NOT NULL,
    "leadId" TEXT NOT NULL,
    "direction" "MessageDirection" NOT NULL,
    "body" TEXT NOT NULL,
    "sentAt" TIMESTAMP(3) NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "Message_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "LeadConversationInsight" (
    "leadId" TEXT NOT NULL,
    "stage" TEXT NOT NULL,
    "buyingSignals" JSONB NOT NULL,
    "risks" JSONB NOT NULL,
    "nextAction" TEXT NOT NULL,
    "confidence" DOUBLE PRECISION NOT NULL,
    "model" TEXT NOT NULL,
    "promptVersion" TEXT NOT NULL,
    "sourceLastMessageAt" TIMESTAMP(3) NOT NULL,
    "sourceMessageCount" INTEGER NOT NULL,
    "promptTokens" INTEGER NOT NULL,
    "completionTokens" INTEGER NOT NULL,
    "llmRequestId" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "LeadConversationInsight_pkey" PRIMARY KEY ("leadId")
);

-- CreateIndex
CREATE UNIQUE INDEX "Lead_email_key" ON "Lead"("email");

-- CreateIndex
CREATE INDEX "Message_leadId_sentAt_idx" ON "Message"("leadId", "sentAt");

-- AddForeignKey
ALTER TABLE "Message" ADD CONSTRAINT "Message_leadId_fkey" FOREIGN KEY ("leadId") REFERENCES "Lead"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "LeadConversationInsight" ADD CONSTRAINT "LeadConversationInsight_leadId_fkey" FOREIGN KEY ("leadId") REFERENCES "Lead"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- The candidate query walks booked leads with messages in id order (keyset pages) and probes the
-- insight by primary key; this partial index is that walk, carrying "lastMessageAt" so the
-- staleness test needs no heap visit for the lead. Nothing in Prisma maintains "lastMessageAt":
-- the app sets it when it stores a message.
CREATE INDEX "Lead_candidates_idx" ON "Lead"("id") INCLUDE ("lastMessageAt")
    WHERE "bookedAt" IS NOT NULL AND "lastMessageAt" IS NOT NULL;
